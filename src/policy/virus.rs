//! Policy stage (work in progress in the working tree; not yet wired).
