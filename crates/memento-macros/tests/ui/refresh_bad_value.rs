#[memento::cache(expires_after = "1h", refresh = "sync")]
fn rate(currency: String) -> f64 {
    currency.len() as f64
}

fn main() {}
