#[derive(serde::Deserialize)]
struct Report {
    total: u32,
}

#[memento::cache]
fn summarize(x: u32) -> Report {
    Report { total: x }
}

fn main() {}
