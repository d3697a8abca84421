#[derive(serde::Serialize)]
struct Model {
    fitted: bool,
}

impl Model {
    #[memento::cache]
    fn fit(&mut self, x: f64) -> f64 {
        self.fitted = true;
        x
    }
}

fn main() {}
