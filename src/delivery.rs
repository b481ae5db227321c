//! delivery. Placeholder.
