//! A client of the REST API (API.md): raw calls that return `(status, json)`, and
//! typed helpers for the calls the scenarios make, which fail with the status and
//! body whenever the answer is not the one the contract promises.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};

/// The longest any request may take. Long polls in the scenarios wait 5 s at most.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a connection may take to open on loopback.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An HTTP status and the JSON body (`Value::Null` when the body is empty, a JSON
/// string holding the text when it is not JSON).
pub type Reply = (u16, Value);

/// A handle on one broker's REST API, with a bearer token. Cheap to clone; clones
/// share a connection pool. [`Api::fresh`] makes one with its own connections.
#[derive(Clone, Debug)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// A message as a subscription pull returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pulled {
    /// The partition it is in.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// Its routing key, if it has one.
    pub key: Option<String>,
    /// Its value (UTF-8 text).
    pub value: String,
}

/// A message as a queue receive returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The message id.
    pub id: String,
    /// The receipt that acks or nacks this delivery.
    pub receipt: String,
    /// Its value (UTF-8 text).
    pub value: String,
    /// Which delivery this is: 1 for the first.
    pub delivery_count: u64,
}

fn new_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .context("building the HTTP client")
}

impl Api {
    /// A client of the broker at `base` (`http://127.0.0.1:PORT`), without a token.
    pub fn new(base: String) -> anyhow::Result<Api> {
        Ok(Api {
            client: new_client()?,
            base,
            token: None,
        })
    }

    /// The same broker and token over connections of its own (for "another
    /// connection" in a scenario).
    pub fn fresh(&self) -> anyhow::Result<Api> {
        Ok(Api {
            client: new_client()?,
            base: self.base.clone(),
            token: self.token.clone(),
        })
    }

    /// The bearer token of the last login, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Logs in (`POST /v1/auth/token`) and keeps the token for later calls.
    pub async fn login(&mut self, username: &str, password: &str) -> anyhow::Result<()> {
        let body = json!({"username": username, "password": password});
        let (status, reply) = self.post("/v1/auth/token", &body).await?;
        if status != 200 {
            bail!("POST /v1/auth/token as {username:?}: {status} {reply}");
        }
        let token = reply["access_token"]
            .as_str()
            .with_context(|| format!("token answer without access_token: {reply}"))?;
        self.token = Some(token.to_owned());
        Ok(())
    }

    /// Another handle on the same broker, logged in as another user.
    pub async fn login_as(&self, username: &str, password: &str) -> anyhow::Result<Api> {
        let mut api = self.fresh()?;
        api.token = None;
        api.login(username, password).await?;
        Ok(api)
    }

    /// Sends a request; `body` as JSON when given, `headers` added.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method.clone(), &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .with_context(|| format!("{method} {path}: reading the body"))?;
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, json))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.call(Method::GET, path, None, &[]).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Reply> {
        self.call(Method::POST, path, Some(body), &[]).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Reply> {
        self.call(Method::DELETE, path, None, &[]).await
    }

    /// `GET path`, which must answer `200`.
    pub async fn get_ok(&self, path: &str) -> anyhow::Result<Value> {
        expect(self.get(path).await?, 200, &format!("GET {path}"))
    }

    /// `POST /v1/topics`: creates a topic, which must answer `201`.
    pub async fn create_topic(&self, name: &str, partitions: u32) -> anyhow::Result<Value> {
        let body = json!({"name": name, "partitions": partitions});
        let reply = self.post("/v1/topics", &body).await?;
        expect(reply, 201, &format!("create topic {name}"))
    }

    /// `GET /v1/topics/{topic}`.
    pub async fn topic(&self, topic: &str) -> anyhow::Result<Value> {
        self.get_ok(&format!("/v1/topics/{topic}")).await
    }

    /// Each partition's `log_end_offset`, by partition.
    pub async fn log_end_offsets(&self, topic: &str) -> anyhow::Result<Vec<u64>> {
        partition_numbers(&self.topic(topic).await?, "log_end_offset")
    }

    /// Each partition's `high_watermark`, by partition: what a reader can see.
    pub async fn high_watermarks(&self, topic: &str) -> anyhow::Result<Vec<u64>> {
        partition_numbers(&self.topic(topic).await?, "high_watermark")
    }

    /// `POST /v1/topics/{topic}/messages` with `acks`; the (partition, offset) of
    /// each message, in request order. `headers` may carry an `Idempotency-Key`.
    pub async fn produce(
        &self,
        topic: &str,
        messages: &[Value],
        acks: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Vec<(u32, u64)>> {
        let path = format!("/v1/topics/{topic}/messages");
        let body = json!({"messages": messages, "acks": acks});
        let reply = self.call(Method::POST, &path, Some(&body), headers).await?;
        let answer = expect(reply, 200, &format!("produce to {topic}"))?;
        let offsets = answer["offsets"]
            .as_array()
            .with_context(|| format!("produce answer without offsets: {answer}"))?;
        if offsets.len() != messages.len() {
            bail!(
                "produce of {} messages answered {} offsets: {answer}",
                messages.len(),
                offsets.len()
            );
        }
        offsets
            .iter()
            .map(|o| Ok((u32_field(o, "partition")?, u64_field(o, "offset")?)))
            .collect()
    }

    /// `POST /v1/topics/{topic}/subscriptions`, which must answer `201`.
    pub async fn subscribe(
        &self,
        topic: &str,
        name: &str,
        start: &str,
        auto_commit: bool,
    ) -> anyhow::Result<Value> {
        let path = format!("/v1/topics/{topic}/subscriptions");
        let body = json!({"name": name, "start": start, "auto_commit": auto_commit});
        expect(
            self.post(&path, &body).await?,
            201,
            &format!("subscribe {name} to {topic}"),
        )
    }

    /// One pull: `GET .../subscriptions/{sub}/messages?max=&wait_ms=`.
    pub async fn pull(
        &self,
        topic: &str,
        sub: &str,
        max: usize,
        wait_ms: u64,
    ) -> anyhow::Result<Vec<Pulled>> {
        let path =
            format!("/v1/topics/{topic}/subscriptions/{sub}/messages?max={max}&wait_ms={wait_ms}");
        let answer = self.get_ok(&path).await?;
        messages(&answer)?.iter().map(parse_pulled).collect()
    }

    /// Pulls until `count` messages came (or `pulls_max` pulls were made, or a pull
    /// came back empty after waiting `wait_ms`): at most `count` messages.
    pub async fn pull_n(
        &self,
        topic: &str,
        sub: &str,
        count: usize,
        wait_ms: u64,
    ) -> anyhow::Result<Vec<Pulled>> {
        let pulls_max = count + 10;
        let mut out = Vec::with_capacity(count);
        for _ in 0..pulls_max {
            if out.len() >= count {
                break;
            }
            let batch = self.pull(topic, sub, count - out.len(), wait_ms).await?;
            if batch.is_empty() {
                break;
            }
            out.extend(batch);
        }
        if out.len() > count {
            bail!("pulls with max {count} in total returned {}", out.len());
        }
        Ok(out)
    }

    /// `POST .../subscriptions/{sub}/commit` with (partition, next offset) pairs;
    /// must answer `204`.
    pub async fn commit(
        &self,
        topic: &str,
        sub: &str,
        offsets: &[(u32, u64)],
    ) -> anyhow::Result<()> {
        let path = format!("/v1/topics/{topic}/subscriptions/{sub}/commit");
        let offsets: Vec<Value> = offsets
            .iter()
            .map(|(p, o)| json!({"partition": p, "offset": o}))
            .collect();
        let body = json!({ "offsets": offsets });
        expect(
            self.post(&path, &body).await?,
            204,
            &format!("commit {sub}"),
        )?;
        Ok(())
    }

    /// The committed offset of each partition (`GET .../offsets`), by partition.
    pub async fn committed(&self, topic: &str, sub: &str) -> anyhow::Result<Vec<u64>> {
        let path = format!("/v1/topics/{topic}/subscriptions/{sub}/offsets");
        let answer = self.get_ok(&path).await?;
        let mut pairs = answer["offsets"]
            .as_array()
            .with_context(|| format!("offsets answer without offsets: {answer}"))?
            .iter()
            .map(|o| Ok((u32_field(o, "partition")?, u64_field(o, "committed")?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        pairs.sort_unstable();
        Ok(pairs.into_iter().map(|(_, c)| c).collect())
    }

    /// `POST /v1/queues` with `settings` (the name added), which must answer `201`.
    pub async fn create_queue(&self, name: &str, mut settings: Value) -> anyhow::Result<Value> {
        settings["name"] = json!(name);
        expect(
            self.post("/v1/queues", &settings).await?,
            201,
            &format!("create queue {name}"),
        )
    }

    /// `GET /v1/queues/{queue}`.
    pub async fn queue(&self, queue: &str) -> anyhow::Result<Value> {
        self.get_ok(&format!("/v1/queues/{queue}")).await
    }

    /// A queue's `(depth, in_flight)`.
    pub async fn queue_depth(&self, queue: &str) -> anyhow::Result<(u64, u64)> {
        let q = self.queue(queue).await?;
        Ok((u64_field(&q, "depth")?, u64_field(&q, "in_flight")?))
    }

    /// `POST /v1/queues/{queue}/messages`; the ids, one per message.
    pub async fn send(&self, queue: &str, messages: &[Value]) -> anyhow::Result<Vec<String>> {
        self.send_with(queue, messages, &[]).await
    }

    /// [`Api::send`] with request headers (e.g. an `Idempotency-Key`).
    pub async fn send_with(
        &self,
        queue: &str,
        messages: &[Value],
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Vec<String>> {
        let path = format!("/v1/queues/{queue}/messages");
        let body = json!({ "messages": messages });
        let reply = self.call(Method::POST, &path, Some(&body), headers).await?;
        let answer = expect(reply, 200, &format!("send to {queue}"))?;
        let ids = answer["ids"]
            .as_array()
            .with_context(|| format!("send answer without ids: {answer}"))?;
        if ids.len() != messages.len() {
            bail!(
                "send of {} messages answered {} ids: {answer}",
                messages.len(),
                ids.len()
            );
        }
        ids.iter()
            .map(|id| {
                id.as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("id {id} is not a string"))
            })
            .collect()
    }

    /// `POST /v1/queues/{queue}/receive`.
    pub async fn receive(
        &self,
        queue: &str,
        max: usize,
        wait_ms: u64,
        visibility_timeout_ms: u64,
    ) -> anyhow::Result<Vec<Received>> {
        let path = format!("/v1/queues/{queue}/receive");
        let body =
            json!({"max": max, "wait_ms": wait_ms, "visibility_timeout_ms": visibility_timeout_ms});
        let answer = expect(
            self.post(&path, &body).await?,
            200,
            &format!("receive from {queue}"),
        )?;
        messages(&answer)?.iter().map(parse_received).collect()
    }

    /// `POST /v1/queues/{queue}/ack`; the `acked` count.
    pub async fn ack(&self, queue: &str, receipts: &[String]) -> anyhow::Result<u64> {
        let path = format!("/v1/queues/{queue}/ack");
        let answer = expect(
            self.post(&path, &json!({ "receipts": receipts })).await?,
            200,
            &format!("ack on {queue}"),
        )?;
        u64_field(&answer, "acked")
    }
}

/// The body of `reply` when its status is `status`; else an error naming `what`, the
/// status and the body.
pub fn expect(reply: Reply, status: u16, what: &str) -> anyhow::Result<Value> {
    let (got, body) = reply;
    if got != status {
        bail!("{what}: expected {status}, got {got} {body}");
    }
    Ok(body)
}

/// A text message with a key, as produce and send take it.
pub fn keyed(key: &str, value: &str) -> Value {
    json!({"key": key, "value": value})
}

/// A text message without a key.
pub fn unkeyed(value: &str) -> Value {
    json!({ "value": value })
}

/// `object[field]` as a u64, or an error showing the object.
pub fn u64_field(object: &Value, field: &str) -> anyhow::Result<u64> {
    object[field]
        .as_u64()
        .with_context(|| format!("no integer {field:?} in {object}"))
}

fn u32_field(object: &Value, field: &str) -> anyhow::Result<u32> {
    u32::try_from(u64_field(object, field)?).with_context(|| format!("{field} in {object}"))
}

fn str_field(object: &Value, field: &str) -> anyhow::Result<String> {
    object[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no string {field:?} in {object}"))
}

fn messages(answer: &Value) -> anyhow::Result<&Vec<Value>> {
    answer["messages"]
        .as_array()
        .with_context(|| format!("answer without messages: {answer}"))
}

/// `field` of each element of `topic["partitions"]`, in partition order.
fn partition_numbers(topic: &Value, field: &str) -> anyhow::Result<Vec<u64>> {
    let mut pairs = topic["partitions"]
        .as_array()
        .with_context(|| format!("topic without a partitions array: {topic}"))?
        .iter()
        .map(|p| Ok((u32_field(p, "partition")?, u64_field(p, field)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    pairs.sort_unstable();
    Ok(pairs.into_iter().map(|(_, n)| n).collect())
}

fn check_text(message: &Value) -> anyhow::Result<()> {
    // The scenarios send UTF-8 text only, which must come back as text.
    if message["value_encoding"].as_str() == Some("base64") {
        bail!("a text message came back base64-encoded: {message}");
    }
    Ok(())
}

fn parse_pulled(message: &Value) -> anyhow::Result<Pulled> {
    check_text(message)?;
    Ok(Pulled {
        partition: u32_field(message, "partition")?,
        offset: u64_field(message, "offset")?,
        key: message["key"].as_str().map(str::to_owned),
        value: str_field(message, "value")?,
    })
}

fn parse_received(message: &Value) -> anyhow::Result<Received> {
    check_text(message)?;
    Ok(Received {
        id: str_field(message, "id")?,
        receipt: str_field(message, "receipt")?,
        value: str_field(message, "value")?,
        delivery_count: u64_field(message, "delivery_count")?,
    })
}
