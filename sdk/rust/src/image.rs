//! Pulling images ahead of the first sandbox that needs them.

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use microsandbox_client::api::{PullEvent, PullImage, PullPolicy};

use crate::agent;
use crate::error::{Error, Result};

/// Pull `image` into the local agent's cache (always asks the registry); the events report
/// progress, the last one is [`PullEvent::Done`] with the image digest.
pub async fn pull(image: &str) -> Result<BoxStream<'static, Result<PullEvent>>> {
    let client = agent::connect().await?;
    let events = client
        .pull_image(PullImage {
            image: image.to_string(),
            policy: PullPolicy::Always,
        })
        .await?;
    Ok(events.map_err(Error::from).boxed())
}

/// Pull `image` to completion; returns its digest.
pub async fn pull_wait(image: &str) -> Result<String> {
    let mut events = pull(image).await?;
    while let Some(ev) = events.try_next().await? {
        if let PullEvent::Done { digest } = ev {
            return Ok(digest);
        }
    }
    Err(Error::AgentUnreachable(
        "the image pull stream ended before it was done".into(),
    ))
}
