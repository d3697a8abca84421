struct Settings {
    depth: u32,
}

struct Grid {
    cells: Vec<u8>,
}

#[memento::cache]
fn solve(settings: &Settings, x: u32, grid: Grid) -> u32 {
    settings.depth + x + grid.cells.len() as u32
}

fn main() {}
