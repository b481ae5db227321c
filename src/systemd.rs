//! systemd. Placeholder.
