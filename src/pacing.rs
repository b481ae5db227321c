//! Human-like send timing. Placeholder until implemented.
