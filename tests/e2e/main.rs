//! Every end-to-end test, in one binary against the local stack (`make test` starts it): one link
//! of the whole crate instead of one per file. The helpers they share are this package's library
//! (`support/`). Tests named `serial_*` look at whole tables and run afterwards, one at a time.

mod backend_kit;
mod contracts;
mod import_legacy;
mod lambda_events;
mod pipeline;
mod references;
mod security;
mod sync;
