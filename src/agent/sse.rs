//! Server-sent events parser (bounded). Placeholder until implemented.
