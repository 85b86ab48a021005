//! placeholder until the routing branch lands
use bytes::Bytes;
use crate::wire::ServiceAdvertisement;
#[derive(Debug)] pub struct Advertisements;
#[derive(Debug)] pub struct StoredAd { pub ad: ServiceAdvertisement, pub raw: Bytes }
#[derive(Debug)] pub enum AdOutcome { Stored, Cancelled, Stale, Refused(&'static str) }
impl Advertisements { pub fn new() -> Self { Self } pub fn handle(&mut self, _ad: ServiceAdvertisement, _raw: Bytes) -> AdOutcome { todo!() } pub fn iter(&self) -> impl Iterator<Item=&StoredAd> { std::iter::empty() } }
