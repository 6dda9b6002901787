//! Opening the TCP connection to a next-hop address, from the configured
//! source address, within the connect timeout.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// Connects to `ip:port`, binding to `bind` first when given (its family
/// must match; callers filter addresses by family beforehand).
pub(super) async fn connect(
    ip: IpAddr,
    port: u16,
    bind: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let socket = if ip.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(local) = bind {
        socket.bind(SocketAddr::new(local, 0))?;
    }
    match tokio::time::timeout(timeout, socket.connect(SocketAddr::new(ip, port))).await {
        Ok(result) => {
            let stream = result?;
            stream.set_nodelay(true)?;
            Ok(stream)
        }
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {} s", timeout.as_secs()),
        )),
    }
}
