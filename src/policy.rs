//! The DM allowlist. Placeholder.
