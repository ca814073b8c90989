//! camrec
fn main() {}
