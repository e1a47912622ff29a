//! Fetches one layer with `koop` and prints `{outcome} {path}`: a separate process for the
//! end-to-end tests. Usage: `koop-fetch DOMAIN LAYER_ID` over plain HTTP (a loopback test
//! server); the key comes from `KOORDINATES_API_KEY` and the cache from `KOOPCACHE_DIR`, as they
//! would for a user.

use anyhow::{Context, Result};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let domain = args.next().context("usage: koop-fetch DOMAIN LAYER_ID")?;
    let layer_id: u64 = args
        .next()
        .context("usage: koop-fetch DOMAIN LAYER_ID")?
        .parse()
        .context("LAYER_ID must be a number")?;
    let koop = koop::Koop::builder()
        .domain(domain)
        .configure_connection(|connection| connection.plain_http(true))
        .build()?;
    let fetched = koop.fetch_layer(layer_id, &koop::Quiet).await?;
    println!("{:?} {}", fetched.outcome, fetched.path.display());
    Ok(())
}
