//! `signaling-node token`: mints a join token (JWT HS256) for tests and demos.

use std::time::Duration;

use anyhow::{Context, bail};

use super::{SecretArgs, parse_duration};
use switchboard_protocol::auth::{Audience, Claims, RoomGrant, mint_with_kid, unix_now};

/// Arguments of `signaling-node token`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// Where the signing secret comes from.
    #[command(flatten)]
    pub secret: SecretArgs,
    /// The user id the token authenticates (`sub`).
    #[arg(long)]
    pub user: String,
    /// A room the holder may join (repeat for several).
    #[arg(long = "room", value_name = "ROOM")]
    pub rooms: Vec<String>,
    /// Allow every room instead of naming them.
    #[arg(long, conflicts_with = "rooms")]
    pub any_room: bool,
    /// How long the token is valid: 90s, 15m, 1h, 2d …
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// The `kid` to put in the header (the key's id in the node's keys.json).
    #[arg(long)]
    pub kid: Option<String>,
    /// The `aud` claim (nodes started with --jwt-audience require it).
    #[arg(long)]
    pub audience: Option<String>,
    /// The `iss` claim (nodes started with --jwt-issuer require it).
    #[arg(long)]
    pub issuer: Option<String>,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

/// The token `args` describe, valid from now.
pub fn mint_token(args: &TokenArgs) -> anyhow::Result<String> {
    let secret = args.secret.require()?;
    if args.user.is_empty() {
        bail!("--user must not be empty");
    }
    let rooms = if args.any_room {
        RoomGrant::Any
    } else if args.rooms.is_empty() {
        bail!("name the rooms the token allows with --room ROOM (repeatable) or pass --any-room");
    } else {
        RoomGrant::Rooms(args.rooms.clone())
    };
    let ttl = args.ttl.as_secs().max(1);
    let mut claims = Claims::new(&args.user, rooms, unix_now(), ttl);
    claims.aud = args.audience.clone().map(Audience::One);
    claims.iss = args.issuer.clone();
    Ok(mint_with_kid(&secret, args.kid.as_deref(), &claims))
}

/// Prints the token on stdout.
pub fn run_token(args: &TokenArgs) -> anyhow::Result<()> {
    let token = mint_token(args).context("cannot mint a token")?;
    println!("{token}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use switchboard_protocol::auth::{JwtSecret, verify};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        token: TokenArgs,
    }

    fn parse(args: &[&str]) -> Result<TokenArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("token").chain(args.iter().copied())).map(|c| c.token)
    }

    #[test]
    fn minted_tokens_verify_with_the_same_secret() {
        let args = parse(&[
            "--secret", "k", "--user", "alice", "--room", "r1", "--room", "r2", "--ttl", "2h",
        ])
        .unwrap();
        let token = mint_token(&args).unwrap();
        let claims = verify(&JwtSecret::new(b"k".to_vec()).unwrap(), &token, unix_now()).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(
            claims.rooms,
            RoomGrant::Rooms(vec!["r1".into(), "r2".into()])
        );
        let ttl = claims.exp - unix_now();
        assert!((7190..=7200).contains(&ttl), "{ttl}");
        assert!(
            verify(
                &JwtSecret::new(b"other".to_vec()).unwrap(),
                &token,
                unix_now()
            )
            .is_err()
        );
    }

    #[test]
    fn any_room_and_missing_rooms() {
        let args = parse(&["--secret", "k", "--user", "bob", "--any-room"]).unwrap();
        let token = mint_token(&args).unwrap();
        let claims = verify(&JwtSecret::new(b"k".to_vec()).unwrap(), &token, unix_now()).unwrap();
        assert_eq!(claims.rooms, RoomGrant::Any);
        let args = parse(&["--secret", "k", "--user", "bob"]).unwrap();
        assert!(
            mint_token(&args)
                .unwrap_err()
                .to_string()
                .contains("--room")
        );
        assert!(
            parse(&[
                "--secret",
                "k",
                "--user",
                "bob",
                "--any-room",
                "--room",
                "r"
            ])
            .is_err()
        );
        assert!(parse(&["--secret", "k", "--user", "bob", "--ttl", "soon"]).is_err());
        let args = parse(&["--user", "bob", "--any-room"]).unwrap();
        assert!(mint_token(&args).is_err());
    }
}
