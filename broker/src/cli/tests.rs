//! Argument parsing of every command: what parses, into what, and what clap
//! refuses before anything runs.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::*;

fn parse(args: &[&str]) -> Result<Command, clap::Error> {
    Cli::try_parse_from(std::iter::once("broker").chain(args.iter().copied())).map(|c| c.command)
}

fn refused(args: &[&str]) -> bool {
    parse(args).is_err()
}

#[test]
fn user_commands_take_the_data_dir_anywhere() -> Result<(), clap::Error> {
    let Command::User(user) = parse(&["user", "add", "bob", "--admin", "--data-dir", "/d"])? else {
        panic!("not a user command");
    };
    assert_eq!(user.data.data_dir, Some(PathBuf::from("/d")));
    assert!(matches!(
        user.command,
        user::UserCommand::Add { ref name, admin: true } if name == "bob"
    ));
    let Command::User(user) = parse(&["user", "--data-dir", "/e", "list"])? else {
        panic!("not a user command");
    };
    assert_eq!(user.data.data_dir, Some(PathBuf::from("/e")));
    let Command::Acl(acl) = parse(&["acl", "list", "--config", "/etc/broker.toml"])? else {
        panic!("not an acl command");
    };
    assert_eq!(acl.data.config, Some(PathBuf::from("/etc/broker.toml")));
    assert!(refused(&["user", "add"]), "a name is required");
    assert!(
        refused(&["user", "add", "bob", "--password", "x"]),
        "no password flag"
    );
    Ok(())
}

#[test]
fn acl_grants_need_exactly_one_resource_and_a_known_action() -> anyhow::Result<()> {
    let Command::Acl(acl) = parse(&[
        "acl", "grant", "bob", "--topic", "orders.*", "--action", "produce",
    ])?
    else {
        anyhow::bail!("not an acl command");
    };
    let acl::AclCommand::Grant(grant) = acl.command else {
        anyhow::bail!("not a grant");
    };
    assert_eq!(
        grant.grant()?,
        crate::auth::Grant::new(
            crate::auth::ResourceKind::Topic,
            "orders.*",
            crate::auth::Action::Produce
        )
    );
    assert!(refused(&["acl", "grant", "bob", "--action", "produce"]));
    assert!(refused(&[
        "acl", "grant", "bob", "--topic", "t", "--queue", "q", "--action", "admin"
    ]));
    assert!(refused(&[
        "acl", "grant", "bob", "--topic", "t", "--action", "write"
    ]));
    assert!(parse(&["acl", "list"]).is_ok());
    assert!(parse(&["acl", "list", "bob"]).is_ok());
    Ok(())
}

#[test]
fn client_commands_take_url_and_their_flags() -> anyhow::Result<()> {
    let Command::Topic(topic) = parse(&[
        "topic",
        "create",
        "orders",
        "--partitions",
        "3",
        "--retention-ms",
        "1000",
        "--url",
        "http://h:1",
    ])?
    else {
        anyhow::bail!("not a topic command");
    };
    assert_eq!(topic.connect.url.as_deref(), Some("http://h:1"));
    let topic::TopicCommand::Create(create) = topic.command else {
        anyhow::bail!("not create");
    };
    assert_eq!(
        (create.partitions, create.retention_ms),
        (Some(3), Some(1000))
    );
    assert!(refused(&["topic", "create", "orders", "--partitions", "x"]));
    assert!(parse(&["login", "--user", "alice"]).is_ok());
    assert!(parse(&["logout"]).is_ok());
    assert!(parse(&["sub", "seek", "t", "s", "--to", "earliest"]).is_ok());
    assert!(refused(&["sub", "seek", "t", "s"]), "a target is required");
    assert!(refused(&[
        "sub", "seek", "t", "s", "--to", "latest", "--offset", "3"
    ]));
    assert!(refused(&[
        "sub",
        "seek",
        "t",
        "s",
        "--partition",
        "1",
        "--timestamp",
        "5"
    ]));
    assert!(parse(&["queue", "ack", "jobs", "r1", "r2"]).is_ok());
    assert!(parse(&["queue", "receive", "jobs", "--wait-ms", "30000"]).is_ok());
    assert!(
        refused(&["queue", "receive", "jobs", "--wait-ms", "30001"]),
        "the broker waits at most 30000 ms"
    );
    assert!(refused(&["queue", "ack", "jobs"]), "receipts are required");
    Ok(())
}

#[test]
fn produce_and_consume_flags() -> anyhow::Result<()> {
    let Command::Produce(produce) = parse(&[
        "produce", "t", "--key", "k", "-H", "a=b", "--acks", "leader",
    ])?
    else {
        anyhow::bail!("not produce");
    };
    assert_eq!(produce.key.as_deref(), Some("k"));
    assert_eq!(produce.headers, [("a".to_owned(), "b".to_owned())]);
    assert_eq!(produce.acks, Some(produce::AcksArg::Leader));
    assert_eq!(produce.batch_lines, 500);
    assert!(refused(&["produce", "t", "--acks", "some"]));
    assert!(refused(&["produce", "t", "-H", "novalue"]));
    let Command::Consume(consume) = parse(&[
        "consume",
        "t",
        "--subscription",
        "s",
        "--create",
        "--from",
        "earliest",
        "--max",
        "5",
        "--json",
    ])?
    else {
        anyhow::bail!("not consume");
    };
    assert!(consume.create && consume.json && !consume.follow);
    assert_eq!(consume.from, Some(consume::StartArg::Earliest));
    assert_eq!(consume.max, Some(5));
    assert!(refused(&["consume", "t"]), "a subscription is required");
    assert!(
        refused(&["consume", "t", "-s", "s", "--from", "latest"]),
        "--from needs --create"
    );
    Ok(())
}

#[test]
fn bench_is_bounded() -> anyhow::Result<()> {
    let Command::Bench(bench) = parse(&["bench", "--duration", "10s", "--compare-noop"])? else {
        anyhow::bail!("not bench");
    };
    assert_eq!(bench.duration, Some(Duration::from_secs(10)));
    assert_eq!(
        (bench.batch, bench.message_size, bench.connections),
        (100, 100, 8)
    );
    assert_eq!(bench.mode, bench::Mode::Produce);
    let Command::Bench(bench) = parse(&["bench", "--count", "2000", "--mode", "both", "--json"])?
    else {
        anyhow::bail!("not bench");
    };
    assert_eq!(bench.count, Some(2000));
    assert!(bench.json);
    assert!(refused(&["bench"]), "a duration or a count is required");
    assert!(refused(&["bench", "--count", "0"]));
    assert!(refused(&["bench", "--count", "1", "--connections", "1025"]));
    assert!(refused(&["bench", "--count", "1", "--connections", "0"]));
    assert!(refused(&["bench", "--duration", "2h"]));
    assert!(refused(&["bench", "--count", "1", "--rounds", "0"]));
    assert!(refused(&["bench", "--count", "1", "--rounds", "101"]));
    assert!(refused(&["bench", "--count", "1", "--mode", "sideways"]));
    assert!(
        refused(&["bench", "--count", "1", "--password", "x"]),
        "--password needs --user"
    );
    Ok(())
}

#[test]
fn bench_passes_acks_to_produce() -> anyhow::Result<()> {
    let Command::Bench(bench) = parse(&["bench", "--count", "1"])? else {
        anyhow::bail!("not bench");
    };
    assert_eq!(bench.acks, None, "the broker's default unless given");
    for (text, acks) in [
        ("all", produce::AcksArg::All),
        ("leader", produce::AcksArg::Leader),
        ("none", produce::AcksArg::None),
    ] {
        let Command::Bench(bench) = parse(&["bench", "--duration", "1s", "--acks", text])? else {
            anyhow::bail!("not bench");
        };
        assert_eq!(bench.acks, Some(acks));
    }
    assert!(refused(&["bench", "--count", "1", "--acks", "some"]));
    Ok(())
}

#[test]
fn serve_still_parses() {
    assert!(matches!(
        parse(&["serve", "--listen", "127.0.0.1:0"]),
        Ok(Command::Serve(_))
    ));
}

#[test]
fn every_serve_setting_has_a_flag_an_env_var_and_a_config_key() -> anyhow::Result<()> {
    let mut cli = <Cli as clap::CommandFactory>::command();
    cli.build();
    let serve = cli
        .find_subcommand_mut("serve")
        .ok_or_else(|| anyhow::anyhow!("no serve"))?;
    let mut flags = std::collections::BTreeSet::new();
    for arg in serve.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version") {
            continue;
        }
        assert!(
            arg.get_env().is_some(),
            "--{id} reads no environment variable"
        );
        flags.insert(id.to_owned());
    }
    flags.remove("config");
    let config = serde_json::to_value(BrokerConfig::default())?;
    let mut keys: std::collections::BTreeSet<String> = config
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("not an object"))?
        .keys()
        .cloned()
        .collect();
    assert!(
        keys.remove("admin_password"),
        "no flag on purpose: flags show in ps"
    );
    assert_eq!(flags, keys);
    let help = serve.render_long_help().to_string();
    for env in [
        "BROKER_ADMIN_PASSWORD",
        "BROKER_LOG",
        "BROKER_MAINTENANCE_INTERVAL_MS",
    ] {
        assert!(help.contains(env), "serve --help does not mention {env}");
    }
    Ok(())
}

#[test]
fn a_refused_token_from_the_environment_is_not_cured_by_a_login() -> anyhow::Result<()> {
    let topic_list = parse(&["topic", "list"])?;
    let hint = unauthorized_hint(&topic_list, true).unwrap_or_default();
    assert!(
        hint.contains("BROKER_TOKEN") && !hint.contains("log in again"),
        "{hint}"
    );
    assert_eq!(
        unauthorized_hint(&topic_list, false),
        Some("log in again with `broker login`")
    );
    assert_eq!(unauthorized_hint(&parse(&["login"])?, true), None);
    let bench_as = parse(&["bench", "--count", "1", "--user", "dan"])?;
    assert_eq!(unauthorized_hint(&bench_as, false), None);
    Ok(())
}
