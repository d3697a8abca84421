struct Settings {
    depth: u32,
}

#[memento::cache]
fn solve(settings: &Settings, x: u32) -> u32 {
    settings.depth + x
}

fn main() {}
