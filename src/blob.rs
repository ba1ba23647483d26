//! Binding of the core's streamed blobs. Being written.
