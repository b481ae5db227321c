//! Turn scheduling. Placeholder.
