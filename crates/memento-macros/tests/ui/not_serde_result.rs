// The `Ok` type of a `Result` output is what is stored.
struct Report {
    total: u32,
}

#[memento::cache]
fn summarize(x: u32) -> Result<Report, String> {
    Ok(Report { total: x })
}

fn main() {}
