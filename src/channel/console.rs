//! The console channel (`clawbox chat`). Placeholder.
