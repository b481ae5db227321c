//! fault. Placeholder.
