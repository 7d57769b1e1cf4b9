//! Ferry end to end: a real receiver and a real sender over real QUIC on
//! 127.0.0.1, real files, real SQLite. One test binary, one module per
//! subject, shared helpers in `util`.

mod copies;
mod crash;
mod delta;
mod faults;
mod hostile;
mod limits;
mod promises;
mod ratelimit;
mod reporting;
mod restore;
mod resume;
mod source_race;
mod sparse;
mod sync;
mod trust;
mod util;
