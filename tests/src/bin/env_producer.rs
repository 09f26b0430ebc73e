//! A producer configured only by the environment, for the tests of
//! `RedisConfig::from_env` (`REDIS_URL`, `QUERN_REDIS_CA`, `QUERN_REDIS_CERT`,
//! `QUERN_REDIS_KEY`).
//!
//! `env_producer PREFIX QUEUE` adds one job named `probe` to QUEUE under
//! PREFIX and prints its id; on failure it prints the error to stderr and
//! exits 1.

#![forbid(unsafe_code)]

use quern_common::RedisConfig;
use quern_producer::Queue;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [prefix, queue] = args.as_slice() else {
        eprintln!("usage: env_producer PREFIX QUEUE");
        std::process::exit(2);
    };
    let config = RedisConfig::from_env().prefix(prefix.clone());
    let added = async { Queue::connect(&config, queue).await?.add("probe", &()).await }.await;
    match added {
        Ok(added) => println!("{}", added.id),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
