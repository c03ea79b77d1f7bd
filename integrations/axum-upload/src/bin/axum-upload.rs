//! `axum-upload [ADDR]`: serves `POST /upload` (default 127.0.0.1:3000) with
//! request bodies in a 64 MiB arena.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let (_arena, layer) = axum_upload::Config::default().build()?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum_upload::serve(listener, layer).await?;
    Ok(())
}
