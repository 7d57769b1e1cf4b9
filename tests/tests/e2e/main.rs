//! Ferry end to end: a real receiver and a real sender over real QUIC on
//! 127.0.0.1, real files, real SQLite. One test binary, one module per
//! subject, shared helpers in `util`.

mod browse;
mod bucket;
mod bucket_store;
mod copies;
mod crash;
mod delta;
mod dirmeta;
mod errors;
mod exclude;
mod faults;
mod hostile;
mod limits;
mod local_store;
mod newuser_status;
mod promises;
mod ratelimit;
mod reporting;
mod restart;
mod restore;
mod resume;
mod s3_servers;
mod sealed;
mod sealed_life;
mod senders;
mod service;
mod signals;
mod source_race;
mod sparse;
mod sync;
mod terminal;
mod trust;
mod util;
mod watch;
