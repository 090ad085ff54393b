//! The one shape of every watch here: a list gathered whole and handed over at its end,
//! then changes one by one, with errors logged and retried under backoff.

use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};

/// What one watch does with what it sees. A relist is gathered into a fresh
/// [`WatchSink::Listing`] and handed to [`WatchSink::relisted`] whole, so no reader ever
/// sees half a list.
pub(super) trait WatchSink<K> {
    /// What a relist gathers before it is handed over.
    type Listing: Default;
    /// One object of a relist.
    fn listed(&mut self, listing: &mut Self::Listing, object: K);
    /// The relist is complete.
    fn relisted(&mut self, listing: Self::Listing);
    /// An object was created or changed.
    fn applied(&mut self, object: K);
    /// An object was deleted.
    fn deleted(&mut self, object: K);
}

/// Feeds a watch `stream` (`what` names it in logs) to `sink` for as long as the stream
/// runs, which is forever; calls `first_listed` after the first complete list.
pub(super) async fn follow<K, S>(
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    what: &'static str,
    mut sink: S,
    first_listed: impl FnOnce(),
) where
    S: WatchSink<K>,
{
    let mut stream = std::pin::pin!(resilient(stream, what));
    let mut listing: Option<S::Listing> = None;
    let mut first_listed = Some(first_listed);
    while let Some(event) = stream.next().await {
        match event {
            Event::Init => listing = Some(S::Listing::default()),
            Event::InitApply(object) => {
                sink.listed(listing.get_or_insert_with(S::Listing::default), object)
            }
            Event::InitDone => {
                sink.relisted(listing.take().unwrap_or_default());
                if let Some(first_listed) = first_listed.take() {
                    first_listed();
                }
            }
            Event::Apply(object) => sink.applied(object),
            Event::Delete(object) => sink.deleted(object),
        }
    }
}

/// Backoff keeps a flapping API server from being hammered; the stream never ends.
fn resilient<S, T>(stream: S, what: &'static str) -> impl Stream<Item = T>
where
    S: Stream<Item = Result<T, watcher::Error>>,
{
    stream.filter_map(move |item| async move {
        match item {
            Ok(item) => Some(item),
            Err(error) => {
                tracing::warn!(%error, watch = what, "watch error; retrying");
                None
            }
        }
    })
}
