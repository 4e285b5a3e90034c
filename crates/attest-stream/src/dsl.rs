//! A small fluent DSL: stateless steps (`map`, `filter`, `flat_map`, `key_by`) composed in
//! front of a stateful operator, giving one [`Operator`] the runtime drives and checkpoints.
//!
//! ```
//! use std::time::Duration;
//! use attest_stream::{agg::Mean, dsl::Pipeline, window::{EmitMode, HoppingWindows}};
//! use attest_stream::{Collector, Operator};
//!
//! #[derive(Clone)]
//! struct Order { product: String, amount: f64 }
//!
//! let mut job = Pipeline::<Order>::new()
//!     .filter(|o| o.amount > 0.0)
//!     .key_by(|o| o.product.clone())
//!     .map(|o| o.amount)
//!     .window(HoppingWindows::of(Duration::from_secs(300), Duration::from_secs(1))?)
//!     .aggregate(Mean)
//!     .emit(EmitMode::Final);
//! let mut out = Collector::new();
//! job.on_record(Order { product: "tea".into(), amount: 4.0 }, 1_000, &mut out);
//! job.on_record(Order { product: "tea".into(), amount: -1.0 }, 1_001, &mut out);
//! job.on_record(Order { product: "tea".into(), amount: 2.0 }, 1_500, &mut out);
//! job.on_watermark(1_999, &mut out);
//! assert_eq!(out.outputs[0].value, 3.0); // window [-298000, 2000)
//! # Ok::<(), attest_stream::StreamError>(())
//! ```
//!
//! Steps are generic types composed at compile time (no boxed closures, no allocation per
//! record). They must be stateless (or at least deterministic and not part of the checkpoint):
//! only the final operator's state is snapshotted.
//!
//! Late records: the late side output of a chain carries the *original* input record. When
//! the operator's [`LateHint`] says a record may be late, the chain keeps a clone of it
//! (hence `I: Clone`); records that cannot be late are moved through without copying.

use std::hash::Hash;
use std::marker::PhantomData;

use crate::agg::Aggregator;
use crate::window::{
    AlignedWindowOperator, EmitMode, HoppingWindows, SessionWindowOperator, SessionWindows,
    SlidingWindowOperator, SlidingWindows, TumblingWindows,
};
use crate::{Collector, LateHint, Operator, StreamError, Timestamp};

/// A stateless step from inputs `I` to zero or more outputs.
pub trait Stage<I> {
    /// Output type.
    type Out;
    /// Processes one input, passing each output to `sink`.
    fn push<F: FnMut(Self::Out)>(&mut self, input: I, sink: &mut F);
}

/// The empty chain: passes records through.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl<I> Stage<I> for Identity {
    type Out = I;
    #[inline]
    fn push<F: FnMut(I)>(&mut self, input: I, sink: &mut F) {
        sink(input)
    }
}

/// `map` step.
#[derive(Debug, Clone)]
pub struct Map<S, F> {
    inner: S,
    f: F,
}

impl<I, O, S, F> Stage<I> for Map<S, F>
where
    S: Stage<I>,
    F: FnMut(S::Out) -> O,
{
    type Out = O;
    #[inline]
    fn push<G: FnMut(O)>(&mut self, input: I, sink: &mut G) {
        let Self { inner, f } = self;
        inner.push(input, &mut |x| sink(f(x)))
    }
}

/// `filter` step.
#[derive(Debug, Clone)]
pub struct Filter<S, F> {
    inner: S,
    f: F,
}

impl<I, S, F> Stage<I> for Filter<S, F>
where
    S: Stage<I>,
    F: FnMut(&S::Out) -> bool,
{
    type Out = S::Out;
    #[inline]
    fn push<G: FnMut(S::Out)>(&mut self, input: I, sink: &mut G) {
        let Self { inner, f } = self;
        inner.push(input, &mut |x| {
            if f(&x) {
                sink(x)
            }
        })
    }
}

/// `flat_map` step.
#[derive(Debug, Clone)]
pub struct FlatMap<S, F> {
    inner: S,
    f: F,
}

impl<I, S, F, It> Stage<I> for FlatMap<S, F>
where
    S: Stage<I>,
    F: FnMut(S::Out) -> It,
    It: IntoIterator,
{
    type Out = It::Item;
    #[inline]
    fn push<G: FnMut(It::Item)>(&mut self, input: I, sink: &mut G) {
        let Self { inner, f } = self;
        inner.push(input, &mut |x| {
            for y in f(x) {
                sink(y)
            }
        })
    }
}

/// `key_by` step: pairs each record with its key.
#[derive(Debug, Clone)]
pub struct KeyBy<S, F> {
    inner: S,
    f: F,
}

impl<I, K, S, F> Stage<I> for KeyBy<S, F>
where
    S: Stage<I>,
    F: FnMut(&S::Out) -> K,
{
    type Out = (K, S::Out);
    #[inline]
    fn push<G: FnMut((K, S::Out))>(&mut self, input: I, sink: &mut G) {
        let Self { inner, f } = self;
        inner.push(input, &mut |x| {
            let k = f(&x);
            sink((k, x))
        })
    }
}

/// `map` on the values of a keyed stream.
#[derive(Debug, Clone)]
pub struct MapValues<S, F> {
    inner: S,
    f: F,
}

impl<I, K, V, W, S, F> Stage<I> for MapValues<S, F>
where
    S: Stage<I, Out = (K, V)>,
    F: FnMut(V) -> W,
{
    type Out = (K, W);
    #[inline]
    fn push<G: FnMut((K, W))>(&mut self, input: I, sink: &mut G) {
        let Self { inner, f } = self;
        inner.push(input, &mut |(k, v)| sink((k, f(v))))
    }
}

/// `filter` on the values of a keyed stream.
#[derive(Debug, Clone)]
pub struct FilterValues<S, F> {
    inner: S,
    f: F,
}

impl<I, K, V, S, F> Stage<I> for FilterValues<S, F>
where
    S: Stage<I, Out = (K, V)>,
    F: FnMut(&K, &V) -> bool,
{
    type Out = (K, V);
    #[inline]
    fn push<G: FnMut((K, V))>(&mut self, input: I, sink: &mut G) {
        let Self { inner, f } = self;
        inner.push(input, &mut |(k, v)| {
            if f(&k, &v) {
                sink((k, v))
            }
        })
    }
}

/// `flat_map` on the values of a keyed stream (the key is cloned for each output).
#[derive(Debug, Clone)]
pub struct FlatMapValues<S, F> {
    inner: S,
    f: F,
}

impl<I, K, V, It, S, F> Stage<I> for FlatMapValues<S, F>
where
    K: Clone,
    S: Stage<I, Out = (K, V)>,
    F: FnMut(V) -> It,
    It: IntoIterator,
{
    type Out = (K, It::Item);
    #[inline]
    fn push<G: FnMut((K, It::Item))>(&mut self, input: I, sink: &mut G) {
        let Self { inner, f } = self;
        inner.push(input, &mut |(k, v)| {
            for w in f(v) {
                sink((k.clone(), w))
            }
        })
    }
}

/// An unkeyed pipeline of stateless steps over inputs `I`.
#[derive(Debug, Clone)]
pub struct Pipeline<I, S = Identity> {
    stages: S,
    _in: PhantomData<fn(I)>,
}

impl<I> Pipeline<I, Identity> {
    /// An empty pipeline over inputs of type `I`.
    pub fn new() -> Self {
        Self {
            stages: Identity,
            _in: PhantomData,
        }
    }
}

impl<I> Default for Pipeline<I, Identity> {
    fn default() -> Self {
        Self::new()
    }
}

impl<I, S: Stage<I>> Pipeline<I, S> {
    fn with<T>(stages: T) -> Pipeline<I, T> {
        Pipeline {
            stages,
            _in: PhantomData,
        }
    }

    /// Transforms each record.
    pub fn map<O, F: FnMut(S::Out) -> O>(self, f: F) -> Pipeline<I, Map<S, F>> {
        Self::with(Map {
            inner: self.stages,
            f,
        })
    }

    /// Keeps the records for which `f` is true.
    pub fn filter<F: FnMut(&S::Out) -> bool>(self, f: F) -> Pipeline<I, Filter<S, F>> {
        Self::with(Filter {
            inner: self.stages,
            f,
        })
    }

    /// Replaces each record by zero or more records.
    pub fn flat_map<It: IntoIterator, F: FnMut(S::Out) -> It>(
        self,
        f: F,
    ) -> Pipeline<I, FlatMap<S, F>> {
        Self::with(FlatMap {
            inner: self.stages,
            f,
        })
    }

    /// Keys the stream: each record becomes `(key, record)`.
    pub fn key_by<K, F: FnMut(&S::Out) -> K>(self, f: F) -> KeyedPipeline<I, KeyBy<S, F>> {
        KeyedPipeline {
            stages: KeyBy {
                inner: self.stages,
                f,
            },
            _in: PhantomData,
        }
    }

    /// Ends the pipeline with a stateful operator.
    pub fn then<Op>(self, op: Op) -> Chain<I, S, Op>
    where
        Op: Operator<In = S::Out>,
    {
        Chain::new(self.stages, op)
    }
}

/// A keyed pipeline: its steps produce `(key, value)`.
#[derive(Debug, Clone)]
pub struct KeyedPipeline<I, S> {
    stages: S,
    _in: PhantomData<fn(I)>,
}

impl<I, K, V, S> KeyedPipeline<I, S>
where
    S: Stage<I, Out = (K, V)>,
{
    fn with<T>(stages: T) -> KeyedPipeline<I, T> {
        KeyedPipeline {
            stages,
            _in: PhantomData,
        }
    }

    /// Transforms each value (the key stays).
    pub fn map<W, F: FnMut(V) -> W>(self, f: F) -> KeyedPipeline<I, MapValues<S, F>> {
        Self::with(MapValues {
            inner: self.stages,
            f,
        })
    }

    /// Keeps the records for which `f(key, value)` is true.
    pub fn filter<F: FnMut(&K, &V) -> bool>(self, f: F) -> KeyedPipeline<I, FilterValues<S, F>> {
        Self::with(FilterValues {
            inner: self.stages,
            f,
        })
    }

    /// Replaces each value by zero or more values under the same key.
    pub fn flat_map<It: IntoIterator, F: FnMut(V) -> It>(
        self,
        f: F,
    ) -> KeyedPipeline<I, FlatMapValues<S, F>>
    where
        K: Clone,
    {
        Self::with(FlatMapValues {
            inner: self.stages,
            f,
        })
    }

    /// Windows the keyed stream; follow with [`Windowed::aggregate`].
    pub fn window<W: WindowSpec>(self, windows: W) -> Windowed<I, S, W> {
        Windowed {
            stages: self.stages,
            windows,
            _in: PhantomData,
        }
    }

    /// Ends the pipeline with a stateful operator over `(key, value)`.
    pub fn then<Op>(self, op: Op) -> Chain<I, S, Op>
    where
        Op: Operator<In = (K, V)>,
    {
        Chain::new(self.stages, op)
    }
}

/// A window definition usable in a pipeline: [`TumblingWindows`], [`HoppingWindows`],
/// [`SlidingWindows`] or [`SessionWindows`].
pub trait WindowSpec {
    /// The operator this definition builds.
    type Operator<K, V, A>
    where
        K: Eq + Hash + Clone,
        A: Aggregator<V>;
    /// Builds the operator.
    fn build<K, V, A>(self, agg: A, mode: EmitMode) -> Self::Operator<K, V, A>
    where
        K: Eq + Hash + Clone,
        A: Aggregator<V>;
}

macro_rules! window_spec {
    ($spec:ty, $op:ident) => {
        impl WindowSpec for $spec {
            type Operator<K, V, A>
                = $op<K, V, A>
            where
                K: Eq + Hash + Clone,
                A: Aggregator<V>;
            fn build<K, V, A>(self, agg: A, mode: EmitMode) -> $op<K, V, A>
            where
                K: Eq + Hash + Clone,
                A: Aggregator<V>,
            {
                self.aggregate(agg, mode)
            }
        }
    };
}
window_spec!(TumblingWindows, AlignedWindowOperator);
window_spec!(HoppingWindows, AlignedWindowOperator);
window_spec!(SlidingWindows, SlidingWindowOperator);
window_spec!(SessionWindows, SessionWindowOperator);

/// A windowed keyed pipeline waiting for its aggregation.
#[derive(Debug, Clone)]
pub struct Windowed<I, S, W> {
    stages: S,
    windows: W,
    _in: PhantomData<fn(I)>,
}

impl<I, S, W: WindowSpec> Windowed<I, S, W> {
    /// Aggregates each window with `agg`; follow with [`Aggregated::emit`].
    pub fn aggregate<A>(self, agg: A) -> Aggregated<I, S, W, A> {
        Aggregated {
            stages: self.stages,
            windows: self.windows,
            agg,
            _in: PhantomData,
        }
    }
}

/// A windowed aggregation waiting for its emit mode.
#[derive(Debug, Clone)]
pub struct Aggregated<I, S, W, A> {
    stages: S,
    windows: W,
    agg: A,
    _in: PhantomData<fn(I)>,
}

impl<I, K, V, S, W, A> Aggregated<I, S, W, A>
where
    S: Stage<I, Out = (K, V)>,
    K: Eq + Hash + Clone,
    W: WindowSpec,
    A: Aggregator<V>,
{
    /// Chooses when results are emitted and builds the job's operator.
    pub fn emit(self, mode: EmitMode) -> Chain<I, S, W::Operator<K, V, A>>
    where
        W::Operator<K, V, A>: Operator<In = (K, V)>,
    {
        Chain::new(self.stages, self.windows.build(self.agg, mode))
    }
}

/// Stateless steps `S` followed by the stateful operator `Op`: an [`Operator`] over the
/// pipeline's original inputs `I`.
pub struct Chain<I, S, Op: Operator> {
    stages: S,
    op: Op,
    scratch: Collector<Op::Out, Op::In>,
    _in: PhantomData<fn(I)>,
}

impl<I, S, Op: Operator + std::fmt::Debug> std::fmt::Debug for Chain<I, S, Op> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("op", &self.op)
            .finish_non_exhaustive()
    }
}

impl<I, S, Op: Operator> Chain<I, S, Op> {
    fn new(stages: S, op: Op) -> Self {
        Self {
            stages,
            op,
            scratch: Collector::new(),
            _in: PhantomData,
        }
    }

    /// The stateful operator at the end of the chain.
    pub fn operator(&self) -> &Op {
        &self.op
    }
}

impl<I, S, Op> Operator for Chain<I, S, Op>
where
    I: Clone,
    S: Stage<I, Out = Op::In> + Send,
    Op: Operator + LateHint,
    Op::In: Send,
    Op::Out: Send,
{
    type In = I;
    type Out = Op::Out;

    #[inline]
    fn on_record(&mut self, record: I, time: Timestamp, out: &mut Collector<Op::Out, I>) {
        let Self {
            stages,
            op,
            scratch,
            ..
        } = self;
        let original = op.may_be_late(time).then(|| record.clone());
        stages.push(record, &mut |x| op.on_record(x, time, scratch));
        out.outputs.append(&mut scratch.outputs);
        if !scratch.late.is_empty() {
            let n = scratch.late.len();
            scratch.late.clear();
            match original {
                Some(original) => out.late(original, time),
                None => tracing::error!(
                    late = n,
                    time,
                    "operator reported late records at a time its LateHint ruled out; \
                     the original record was not kept"
                ),
            }
        }
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<Op::Out, I>) {
        self.op.on_watermark(watermark, &mut self.scratch);
        out.outputs.append(&mut self.scratch.outputs);
        self.scratch.late.clear();
    }

    fn snapshot(&self) -> Result<Vec<u8>, StreamError> {
        self.op.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StreamError> {
        self.op.restore(snapshot)
    }
}

impl<I, S, Op: Operator + LateHint> LateHint for Chain<I, S, Op> {
    fn may_be_late(&self, time: Timestamp) -> bool {
        self.op.may_be_late(time)
    }
}

/// A stateless terminal operator that emits every record it receives, for pipelines that
/// only `map`/`filter`/`flat_map` (alarms, routing): `Pipeline::new().filter(..).then(Forward::new())`.
/// Nothing is ever late and its snapshot is empty.
pub struct Forward<T> {
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Forward<T> {
    /// The forwarding operator.
    pub fn new() -> Self {
        Self { _t: PhantomData }
    }
}

impl<T> Default for Forward<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for Forward<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Forward")
    }
}

impl<T> LateHint for Forward<T> {
    fn may_be_late(&self, _time: Timestamp) -> bool {
        false
    }
}

impl<T> Operator for Forward<T> {
    type In = T;
    type Out = T;

    #[inline]
    fn on_record(&mut self, record: T, _time: Timestamp, out: &mut Collector<T, T>) {
        out.emit(record);
    }

    fn on_watermark(&mut self, _watermark: Timestamp, _out: &mut Collector<T, T>) {}

    fn snapshot(&self) -> Result<Vec<u8>, StreamError> {
        Ok(Vec::new())
    }

    fn restore(&mut self, _snapshot: &[u8]) -> Result<(), StreamError> {
        Ok(())
    }
}
