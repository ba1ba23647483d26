//! Streamed, chunked blobs (FORMAT.md §4.5). Being written.
