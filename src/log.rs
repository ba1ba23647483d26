//! Binding of the core's append logs. Being written.
