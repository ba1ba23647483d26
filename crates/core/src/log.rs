//! Append logs of records (FORMAT.md §4.6). Being written.
