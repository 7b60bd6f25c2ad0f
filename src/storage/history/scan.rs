//! Reading index keys in order: one range scan of a keyspace from a
//! snapshot ([`Scan`]), several merged by key suffix ([`Merged`], e.g. one
//! per status), and [`collect_page`], which turns them into a page of rows.

use fjall::{Guard, Readable, Snapshot};

use super::cursor::KeyRange;
use super::error::HistoryError;
use super::query::{Order, Page};
use super::schema;

/// Takes (key suffix, value) pairs in order, loads each (`None`: filtered out) until
/// `limit` rows are found; `next` is set only if another row follows.
pub(super) fn collect_page<T>(
    mut next_suffix: impl FnMut() -> Result<Option<Item>, HistoryError>,
    limit: usize,
    mut load: impl FnMut(&[u8], &[u8]) -> Result<Option<T>, HistoryError>,
    cursor_of: impl Fn(&T) -> String,
) -> Result<Page<T>, HistoryError> {
    let mut items = Vec::new();
    while let Some((suffix, value)) = next_suffix()? {
        let Some(row) = load(&suffix, &value)? else {
            continue;
        };
        if items.len() == limit {
            let next = items.last().map(&cursor_of);
            return Ok(Page { items, next });
        }
        items.push(row);
    }
    Ok(Page { items, next: None })
}

/// (key suffix after the scanned prefix, value).
pub(super) type Item = (Vec<u8>, Vec<u8>);

type KeyIter<'a> = Box<dyn Iterator<Item = Guard> + 'a>;

pub(super) fn range_iter<'a>(
    snap: &'a Snapshot,
    ks: &fjall::Keyspace,
    range: KeyRange,
    order: Order,
) -> KeyIter<'a> {
    let iter = snap.range(ks, range);
    match order {
        Order::Asc => Box::new(iter),
        Order::Desc => Box::new(iter.rev()),
    }
}

/// One index scan, yielding (key suffix after its prefix, value).
pub(super) struct Scan<'a> {
    iter: KeyIter<'a>,
    prefix_len: usize,
    head: Option<Item>,
}

impl<'a> Scan<'a> {
    pub fn new(iter: KeyIter<'a>, prefix_len: usize) -> Self {
        Self {
            iter,
            prefix_len,
            head: None,
        }
    }

    fn peek(&mut self) -> Result<Option<&[u8]>, HistoryError> {
        if self.head.is_none() {
            if let Some(guard) = self.iter.next() {
                let (key, value) = guard.into_inner()?;
                let suffix = key
                    .get(self.prefix_len..)
                    .ok_or_else(|| schema::corrupt("index key"))?;
                self.head = Some((suffix.to_vec(), value.to_vec()));
            }
        }
        Ok(self.head.as_ref().map(|(s, _)| s.as_slice()))
    }

    fn take(&mut self) -> Result<Option<Item>, HistoryError> {
        self.peek()?;
        Ok(self.head.take())
    }
}

/// Several scans of one order, merged by key suffix.
pub(super) struct Merged<'a> {
    scans: Vec<Scan<'a>>,
    order: Order,
}

impl<'a> Merged<'a> {
    pub fn new(scans: Vec<Scan<'a>>, order: Order) -> Self {
        Self { scans, order }
    }

    pub fn next(&mut self) -> Result<Option<Item>, HistoryError> {
        let mut best: Option<(usize, Vec<u8>)> = None;
        for (i, scan) in self.scans.iter_mut().enumerate() {
            let Some(suffix) = scan.peek()? else { continue };
            let better = match &best {
                None => true,
                Some((_, b)) => match self.order {
                    Order::Asc => suffix < b.as_slice(),
                    Order::Desc => suffix > b.as_slice(),
                },
            };
            if better {
                best = Some((i, suffix.to_vec()));
            }
        }
        let Some((i, _)) = best else { return Ok(None) };
        self.scans[i].take()
    }
}
