//! The two runtimes (smol and async-std) behind one trait, so a test body
//! runs on both.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};

use futures::future::{BoxFuture, RemoteHandle};
use futures::io::{AsyncRead, AsyncWrite};
use futures::stream::{BoxStream, StreamExt};
use futures::FutureExt;

/// A connection from a runtime's listener, boxed so test bodies need not
/// name the runtime's stream type.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// Accepted connections, `TCP_NODELAY` set.
pub type Connections = BoxStream<'static, io::Result<BoxIo>>;

/// What a test needs from an async runtime.
pub trait Runtime: 'static {
    /// The runtime's name, for messages.
    const NAME: &'static str;
    /// The runtime's own TCP listener.
    type Listener: Send + Sync + 'static;
    /// Runs `future` to its end on this thread.
    fn block_on<T>(future: impl Future<Output = T>) -> T;
    /// Runs `future` in the background.
    fn spawn_detached(future: BoxFuture<'static, ()>);
    /// The runtime's listener over a non-blocking std one.
    fn listener(listener: TcpListener) -> io::Result<Self::Listener>;
    /// The next connection, `TCP_NODELAY` set.
    fn accept(listener: &Self::Listener) -> BoxFuture<'_, io::Result<BoxIo>>;
}

/// smol.
#[derive(Debug)]
pub struct Smol;

impl Runtime for Smol {
    const NAME: &'static str = "smol";
    type Listener = smol::net::TcpListener;

    fn block_on<T>(future: impl Future<Output = T>) -> T {
        smol::block_on(future)
    }

    fn spawn_detached(future: BoxFuture<'static, ()>) {
        smol::spawn(future).detach();
    }

    fn listener(listener: TcpListener) -> io::Result<Self::Listener> {
        smol::net::TcpListener::try_from(listener)
    }

    fn accept(listener: &Self::Listener) -> BoxFuture<'_, io::Result<BoxIo>> {
        Box::pin(async move {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            Ok(Box::new(tcp) as BoxIo)
        })
    }
}

/// async-std.
#[derive(Debug)]
pub struct AsyncStd;

impl Runtime for AsyncStd {
    const NAME: &'static str = "async-std";
    type Listener = async_std::net::TcpListener;

    fn block_on<T>(future: impl Future<Output = T>) -> T {
        async_std::task::block_on(future)
    }

    fn spawn_detached(future: BoxFuture<'static, ()>) {
        drop(async_std::task::spawn(future));
    }

    fn listener(listener: TcpListener) -> io::Result<Self::Listener> {
        Ok(async_std::net::TcpListener::from(listener))
    }

    fn accept(listener: &Self::Listener) -> BoxFuture<'_, io::Result<BoxIo>> {
        Box::pin(async move {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            Ok(Box::new(tcp) as BoxIo)
        })
    }
}

/// Spawns `future` on `R`; dropping the handle cancels it, awaiting it
/// gives its output.
pub fn spawn<R: Runtime, T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> RemoteHandle<T> {
    let (task, handle) = future.remote_handle();
    R::spawn_detached(task.boxed());
    handle
}

/// Binds a loopback listener on a free port.
pub fn listen<R: Runtime>() -> io::Result<(SocketAddr, Connections)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let connections = futures::stream::unfold(R::listener(listener)?, |listener| async move {
        let accepted = R::accept(&listener).await;
        Some((accepted, listener))
    });
    Ok((addr, connections.boxed()))
}

/// Defines, for each named `async fn NAME<R: Runtime>() -> anyhow::Result<()>`,
/// a test on smol (in `mod smol_runtime`) and one on async-std (in
/// `mod async_std_runtime`).
#[macro_export]
macro_rules! on_both_runtimes {
    ($($name:ident),* $(,)?) => {
        $crate::on_runtime!(smol_runtime, Smol, $($name),*);
        $crate::on_runtime!(async_std_runtime, AsyncStd, $($name),*);
    };
}

/// The half of [`on_both_runtimes`] for one runtime.
#[macro_export]
macro_rules! on_runtime {
    ($module:ident, $runtime:ident, $($name:ident),*) => {
        mod $module {
            $(
                #[test]
                fn $name() -> $crate::anyhow::Result<()> {
                    $crate::init_tracing();
                    <$crate::$runtime as $crate::Runtime>::block_on(
                        super::$name::<$crate::$runtime>(),
                    )
                }
            )*
        }
    };
}
