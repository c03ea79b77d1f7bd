//! The drop-in codecs against tokio_util's own, which is the oracle in
//! every test: the same bytes in, the same frames (or the same error) out,
//! under every option, across EOFs and after failed allocations; the read
//! buffer stays small; bad input is an error, not a panic, a hang or a leak.

mod common;

mod api;
mod delimiters;
mod length_delimited;
mod overload;
mod resume;
