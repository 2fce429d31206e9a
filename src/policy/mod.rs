//! Policy stages: what is decided about a connection, a sender and a message.
//!
//! (The pipeline that runs the stages in configured order and merges their verdicts is being
//! built; the stage logic below is written against plain inputs so it can be tested alone.)

pub mod limits;
pub mod spam;
pub mod virus;
