//! supervisor. Placeholder.
