//! Whole frames before an error, over TLS: a peer that writes its frames
//! and closes the TCP connection without TLS `close_notify` (as a crashed
//! or careless peer does). tokio-rustls reports that as `UnexpectedEof`
//! after the data; every whole frame must come out first, compact and
//! zero-copy, on both arenas.

#![cfg(feature = "io")]

use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use arenabuf::io::Frames;
use arenabuf::{BuddyArena, BufferSource, FixedArena};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const FRAMES: usize = 133;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// A self-signed certificate for `localhost`, and both ends' configs.
fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = key.cert.der().clone();
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], private)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

fn payload(i: usize, len: usize) -> Vec<u8> {
    vec![i as u8; len]
}

/// Reads frames until the stream's error; returns both.
async fn until_error<S: futures::Stream<Item = io::Result<Bytes>> + Unpin>(
    mut s: S,
) -> (Vec<Bytes>, io::Error) {
    let mut got = Vec::new();
    loop {
        match s.next().await.expect("an error ends the stream") {
            Ok(f) => got.push(f),
            Err(e) => return (got, e),
        }
    }
}

/// One round: the peer sends `FRAMES` whole frames and the head of one
/// more over TLS, then closes TCP without `close_notify`.
async fn round<S: BufferSource>(source: S, zero_copy: bool) {
    let (server_config, client_config) = configs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = TlsConnector::from(client_config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut wire = BytesMut::new();
        for i in 0..FRAMES {
            let len = 1 + (i * 37) % 900;
            wire.put_u32(len as u32);
            wire.put_slice(&payload(i, len));
        }
        wire.put_u32(500); // a frame cut off by the close
        wire.put_slice(&[7; 100]);
        tls.write_all(&wire).await.unwrap();
        tls.flush().await.unwrap();
        // Close the TCP connection under TLS: no close_notify.
        let (tcp, _session) = tls.into_inner();
        drop(tcp);
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let tls = TlsAcceptor::from(server_config).accept(tcp).await.unwrap();
    let mut builder = Frames::builder(source.clone()).chunk_size(nz(16 << 10));
    if zero_copy {
        builder = builder.zero_copy();
    }
    let frames = builder
        .length_delimited_with(
            tls,
            arenabuf::codec::LengthDelimited::builder().max_frame_length(4096),
        )
        .unwrap();
    let (got, e) = tokio::time::timeout(Duration::from_secs(30), until_error(frames))
        .await
        .expect("hang guard");
    peer.await.unwrap();
    assert_eq!(got.len(), FRAMES, "every whole frame before the error");
    for (i, f) in got.iter().enumerate() {
        assert_eq!(&f[..], &payload(i, 1 + (i * 37) % 900)[..], "frame {i}");
    }
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    drop(got);
    assert_eq!(source.arena_metrics().live_bytes, 0);
}

#[tokio::test]
async fn whole_frames_before_a_tls_peer_closes_without_close_notify() {
    for zero_copy in [false, true] {
        round(
            FixedArena::builder(nz(16), nz(16 << 10)).build().unwrap(),
            zero_copy,
        )
        .await;
        round(
            BuddyArena::builder(nz(256 << 10), nz(64)).build().unwrap(),
            zero_copy,
        )
        .await;
    }
}
