//! Standalone fake WhatsApp Web server (`cargo run -p clawbox-test-kit --bin fake-whatsapp --
//! --listen ADDR --admin ADDR`): prints `listen=<addr>` and `admin=<addr>`, then serves until
//! killed. Owns only argument parsing; the server is the kit's `fakes::whatsapp`.

use kit::fakes::whatsapp::FakeWhatsApp;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut listen = "127.0.0.1:0".to_string();
    let mut admin = "127.0.0.1:0".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let target = match arg.as_str() {
            "--listen" => &mut listen,
            "--admin" => &mut admin,
            other => {
                eprintln!(
                    "fake-whatsapp: unknown argument {other}; use --listen ADDR --admin ADDR"
                );
                std::process::exit(2);
            }
        };
        match args.next() {
            Some(v) => *target = v,
            None => {
                eprintln!("fake-whatsapp: {arg} needs an address");
                std::process::exit(2);
            }
        }
    }
    let fake = match FakeWhatsApp::start_on(&listen, &admin).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake-whatsapp: cannot bind: {e}");
            std::process::exit(1);
        }
    };
    println!("listen={}", fake.ws_addr());
    println!("admin={}", fake.admin_addr());
    fake.serve_forever().await;
}
