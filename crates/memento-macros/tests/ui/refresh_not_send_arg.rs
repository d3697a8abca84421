use std::rc::Rc;

// Left out of the key, but still taken by the refresh's thread.
#[memento::cache(expires_after = "1h", refresh = "background", ignore(currency, window))]
fn rate(currency: Rc<String>, days: u32, window: Rc<Vec<f64>>) -> f64 {
    (currency.len() + days as usize + window.len()) as f64
}

fn main() {}
