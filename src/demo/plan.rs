//! What the demo creates, generated from a seed alone: the catalog, the shoppers and every
//! action, so that two runs with the same flags plan exactly the same data (which is what makes
//! a second run a no-op).
//!
//! The shapes:
//! - **Catalog**: product `i` is in category `i mod categories`; its name combines the
//!   category's words ([`super::words`]); its price is integer cents drawn from the category's
//!   range, skewed to the cheap end, ending in .99 or .49. Money never goes through a float.
//! - **Popularity**: within a category, products have a seeded rank `r` and weight
//!   `1 / (r + 1)` (Zipf, exponent 1); categories weigh `1 / sqrt(c + 1)` in the order of
//!   [`super::words::CATEGORIES`].
//! - **Shoppers**: each prefers two or three categories (drawn by category weight) and has an
//!   activity level (`0.2 + 3u²`: many light shoppers, a few heavy ones); the actions are shared
//!   out in proportion to it.
//! - **Sessions**: a shopper's actions come in sessions: a category (a preferred one 80% of the
//!   time), one to seven views in it, then sometimes a cart add of a viewed product, followed by
//!   either its removal or, more often, its purchase. So views far outnumber cart adds, cart adds
//!   outnumber purchases, and a removal or purchase always follows an add of the same product.
//! - **Time**: a session starts between one hour and [`SPAN`] before the anchor (half uniformly,
//!   half skewed to recent days, as a growing shop would see), its actions 20 s to 4 min apart.

use std::fmt;

use super::words::{CategoryWords, CATEGORIES, FIRST_NAMES, LAST_NAMES};

/// How far back the backfilled actions reach: 29 days, inside the 30 days `POST
/// /activity/batch` accepts, with a day to spare for a run that reuses an anchor of yesterday.
pub const SPAN_SECS: i64 = 29 * 24 * 3600;

/// Most actions in one `POST /activity/batch` (the users service's limit).
pub const MAX_BATCH: usize = 1000;

/// A small deterministic generator (SplitMix64): the same seed gives the same numbers on every
/// platform and with every dependency version, which a general-purpose RNG crate does not
/// promise.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A stream of numbers for `purpose` under `seed`: each purpose (a product's price, a
    /// shopper's actions) draws from its own stream, so changing one count leaves the others'
    /// draws as they were.
    pub fn new(seed: u64, purpose: &str) -> Self {
        let mut rng = Rng(seed ^ fnv1a(purpose.as_bytes()));
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// An index drawn from `cumulative` (running sums of the weights).
    fn weighted(&mut self, cumulative: &[f64]) -> usize {
        let total = cumulative.last().copied().unwrap_or(0.0);
        let x = self.unit() * total;
        cumulative
            .partition_point(|&c| c <= x)
            .min(cumulative.len() - 1)
    }
}

/// FNV-1a: a stable 64-bit hash of a purpose name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A price in cents, shown as the decimal string the products API takes (`"34.99"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Price {
    pub cents: u64,
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.cents / 100, self.cents % 100)
    }
}

/// One product of the catalog.
#[derive(Debug, Clone)]
pub struct PlannedProduct {
    pub name: String,
    pub price: Price,
    /// Index into [`Plan::categories`].
    pub category: usize,
    pub description: String,
    /// Its weight among its category's products (`1 / (rank + 1)`).
    pub popularity: f64,
}

/// One shopper.
#[derive(Debug, Clone)]
pub struct PlannedUser {
    pub name: String,
    pub email: String,
    /// The categories the shopper prefers (indexes into [`Plan::categories`]).
    pub taste: Vec<usize>,
    /// Relative activity: the share of the actions this shopper gets.
    pub activity: f64,
}

/// An action type, as the activity API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    View,
    CartAdd,
    CartRemove,
    Purchase,
}

impl Kind {
    /// Every type, in funnel order.
    pub const ALL: [Kind; 4] = [Kind::View, Kind::CartAdd, Kind::CartRemove, Kind::Purchase];

    /// The `type` of the activity API.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::CartAdd => "cart_add",
            Kind::CartRemove => "cart_remove",
            Kind::Purchase => "purchase",
        }
    }
}

/// One action, its time relative to the anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedAction {
    /// Index into [`Plan::users`].
    pub user: usize,
    /// Index into [`Plan::products`].
    pub product: usize,
    pub kind: Kind,
    pub quantity: u32,
    /// How long before the anchor it happened (positive).
    pub seconds_before: i64,
}

/// Actions sent in one `POST /activity/batch`.
#[derive(Debug, Clone)]
pub struct Batch {
    pub actions: Vec<PlannedAction>,
    /// For each shopper in the batch: how many of their actions this batch and the ones before
    /// it hold. Once the shopper's recorded activity reaches it, the batch was written (batches
    /// are all or nothing).
    pub through: Vec<(usize, usize)>,
}

/// The counts of a set of actions per type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerKind {
    pub views: u64,
    pub cart_adds: u64,
    pub cart_removes: u64,
    pub purchases: u64,
}

impl PerKind {
    /// Counts `actions` per type.
    pub fn of<'a>(actions: impl IntoIterator<Item = &'a PlannedAction>) -> Self {
        let mut counts = PerKind::default();
        for action in actions {
            match action.kind {
                Kind::View => counts.views += 1,
                Kind::CartAdd => counts.cart_adds += 1,
                Kind::CartRemove => counts.cart_removes += 1,
                Kind::Purchase => counts.purchases += 1,
            }
        }
        counts
    }

    /// All types together.
    pub fn total(&self) -> u64 {
        self.views + self.cart_adds + self.cart_removes + self.purchases
    }
}

/// The whole demo data set for one seed and size.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    /// The category names, most popular first.
    pub categories: Vec<&'static str>,
    pub products: Vec<PlannedProduct>,
    pub users: Vec<PlannedUser>,
    /// Running sums of the category weights.
    category_weights: Vec<f64>,
    /// Per category: its products and the running sums of their popularity.
    in_category: Vec<(Vec<usize>, Vec<f64>)>,
    /// Running sums of the shoppers' activity.
    user_weights: Vec<f64>,
}

/// Running sums of `weights`.
fn cumulative(weights: impl IntoIterator<Item = f64>) -> Vec<f64> {
    weights
        .into_iter()
        .scan(0.0, |sum, w| {
            *sum += w;
            Some(*sum)
        })
        .collect()
}

impl Plan {
    /// The catalog and shoppers for `seed`: `products` products in the first `categories`
    /// categories, `users` shoppers.
    pub fn new(
        seed: u64,
        categories: usize,
        products: usize,
        users: usize,
    ) -> Result<Self, String> {
        if categories == 0 || categories > CATEGORIES.len() {
            return Err(format!(
                "--categories must be between 1 and {}",
                CATEGORIES.len()
            ));
        }
        if products == 0 || users == 0 {
            return Err("--products and --users must be at least 1".into());
        }
        let words = &CATEGORIES[..categories];
        let category_weights = cumulative((0..categories).map(|c| 1.0 / ((c + 1) as f64).sqrt()));

        // Each category's share of the products, and each product's rank in its category.
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); categories];
        for i in 0..products {
            members[i % categories].push(i);
        }
        let mut popularity = vec![0.0; products];
        for (c, ids) in members.iter().enumerate() {
            let mut ranks: Vec<usize> = (0..ids.len()).collect();
            let mut rng = Rng::new(seed, &format!("popularity/{}", words[c].slug));
            for k in (1..ranks.len()).rev() {
                ranks.swap(k, rng.below(k + 1));
            }
            for (&id, &rank) in ids.iter().zip(&ranks) {
                popularity[id] = 1.0 / (rank + 1) as f64;
            }
        }
        let catalog = (0..products)
            .map(|i| product(seed, words, i, popularity[i]))
            .collect();
        let in_category = members
            .into_iter()
            .map(|ids| {
                let weights = cumulative(ids.iter().map(|&i| popularity[i]));
                (ids, weights)
            })
            .collect();

        let shoppers: Vec<PlannedUser> = (0..users)
            .map(|u| user(seed, u, &category_weights))
            .collect();
        let user_weights = cumulative(shoppers.iter().map(|u| u.activity));
        Ok(Plan {
            seed,
            categories: words.iter().map(|w| w.slug).collect(),
            products: catalog,
            users: shoppers,
            category_weights,
            in_category,
            user_weights,
        })
    }

    /// The password every demo shopper of this seed has (so one can log in as a shopper and see
    /// their personal recommendations).
    pub fn password(&self) -> String {
        format!("demo-shopper-{}", self.seed)
    }

    /// How many of `total` actions each shopper gets: in proportion to their activity, the
    /// remainder one each to the first shoppers.
    pub fn budgets(&self, total: usize) -> Vec<usize> {
        let sum = self.user_weights.last().copied().unwrap_or(1.0);
        let mut budgets: Vec<usize> = self
            .users
            .iter()
            .map(|u| (total as f64 * u.activity / sum).floor() as usize)
            .collect();
        let given: usize = budgets.iter().sum();
        let n = budgets.len();
        for k in 0..total.saturating_sub(given) {
            budgets[k % n] += 1;
        }
        budgets
    }

    /// Every one of the `total` backfilled actions, shopper by shopper, each shopper's in time
    /// order.
    pub fn actions(&self, total: usize) -> Vec<PlannedAction> {
        let mut all = Vec::with_capacity(total);
        for (u, budget) in self.budgets(total).into_iter().enumerate() {
            let mut rng = Rng::new(self.seed, &format!("actions/{u}"));
            let mut mine = Vec::with_capacity(budget + 16);
            while mine.len() < budget {
                let start = session_start(&mut rng);
                mine.extend(self.session(u, start, &mut rng));
            }
            mine.truncate(budget);
            // Sessions can overlap in time; a stable sort keeps each session's own order.
            mine.sort_by_key(|a| std::cmp::Reverse(a.seconds_before));
            all.extend(mine);
        }
        all
    }

    /// [`Plan::actions`] cut into batches of at most [`MAX_BATCH`], a shopper's actions kept in
    /// one batch whenever they fit in one.
    pub fn batches(&self, total: usize) -> Vec<Batch> {
        let actions = self.actions(total);
        let mut batches = Vec::new();
        let mut current: Vec<PlannedAction> = Vec::new();
        let mut so_far = vec![0usize; self.users.len()];
        let mut close = |current: &mut Vec<PlannedAction>, batches: &mut Vec<Batch>| {
            if current.is_empty() {
                return;
            }
            let mut through: Vec<(usize, usize)> = Vec::new();
            for action in current.iter() {
                so_far[action.user] += 1;
                match through.last_mut() {
                    Some((user, _)) if *user == action.user => {}
                    _ => through.push((action.user, 0)),
                }
            }
            for (user, count) in &mut through {
                *count = so_far[*user];
            }
            batches.push(Batch {
                actions: std::mem::take(current),
                through,
            });
        };
        let mut start = 0;
        while start < actions.len() {
            let user = actions[start].user;
            let end = actions[start..]
                .iter()
                .position(|a| a.user != user)
                .map_or(actions.len(), |n| start + n);
            let mine = &actions[start..end];
            if current.len() + mine.len() > MAX_BATCH {
                close(&mut current, &mut batches);
            }
            for chunk in mine.chunks(MAX_BATCH) {
                if current.len() + chunk.len() > MAX_BATCH {
                    close(&mut current, &mut batches);
                }
                current.extend_from_slice(chunk);
            }
            start = end;
        }
        close(&mut current, &mut batches);
        batches
    }

    /// A shopper drawn by activity (the live traffic's next session).
    pub fn live_user(&self, rng: &mut Rng) -> usize {
        rng.weighted(&self.user_weights)
    }

    /// One session of shopper `user` starting `start` seconds before the anchor: views in one
    /// category, maybe a cart add, then maybe its removal or its purchase.
    pub fn session(&self, user: usize, start: i64, rng: &mut Rng) -> Vec<PlannedAction> {
        let taste = &self.users[user].taste;
        let category = if !taste.is_empty() && rng.chance(0.8) {
            taste[rng.below(taste.len())]
        } else {
            rng.weighted(&self.category_weights)
        };
        let (ids, weights) = &self.in_category[category];
        let mut at = start;
        let mut actions = Vec::new();
        let mut push = |product: usize, kind: Kind, quantity: u32, rng: &mut Rng| {
            actions.push(PlannedAction {
                user,
                product,
                kind,
                quantity,
                seconds_before: at.max(1),
            });
            at -= 20 + rng.below(220) as i64;
        };
        let views = 1 + rng.below(3) + if rng.chance(0.35) { rng.below(5) } else { 0 };
        let mut viewed: Vec<usize> = Vec::with_capacity(views);
        for _ in 0..views {
            let product = if !viewed.is_empty() && rng.chance(0.2) {
                viewed[rng.below(viewed.len())]
            } else {
                ids[rng.weighted(weights)]
            };
            viewed.push(product);
            push(product, Kind::View, 1, rng);
        }
        if rng.chance(0.32) {
            let product = if rng.chance(0.7) {
                viewed[viewed.len() - 1]
            } else {
                viewed[rng.below(viewed.len())]
            };
            let quantity = match rng.below(100) {
                0..=84 => 1,
                85..=95 => 2,
                _ => 3,
            };
            push(product, Kind::CartAdd, quantity, rng);
            if rng.chance(0.25) {
                push(product, Kind::CartRemove, quantity, rng);
            } else if rng.chance(0.6) {
                push(product, Kind::Purchase, quantity, rng);
            }
        }
        actions
    }
}

/// When a backfilled session starts, in seconds before the anchor: at least an hour (so the
/// session ends before the anchor), at most [`SPAN_SECS`]; half uniform, half with a density
/// falling linearly into the past.
fn session_start(rng: &mut Rng) -> i64 {
    let x = if rng.chance(0.5) {
        rng.unit()
    } else {
        1.0 - rng.unit().sqrt()
    };
    3600 + ((SPAN_SECS - 3600) as f64 * x) as i64
}

/// Product `i` of the catalog.
fn product(seed: u64, words: &[CategoryWords], i: usize, popularity: f64) -> PlannedProduct {
    let category = i % words.len();
    let w = &words[category];
    // The j-th product of the category takes name number (a·j + b) mod K, a permutation of the
    // K names because a is prime to K, seeded per category; past K, names repeat with a number.
    let j = i / words.len();
    let k = w.combinations();
    let mut rng = Rng::new(seed, &format!("names/{}", w.slug));
    let mut a = 1 + 2 * rng.below(k / 2);
    while gcd(a, k) != 1 {
        a += 2;
    }
    let b = rng.below(k);
    let n = (a * (j % k) + b) % k;
    let brand = w.brands[n % w.brands.len()];
    let adjective = w.adjectives[(n / w.brands.len()) % w.adjectives.len()];
    let noun = w.nouns[n / (w.brands.len() * w.adjectives.len())];
    let mut name = w
        .pattern
        .replace("{brand}", brand)
        .replace("{adjective}", adjective)
        .replace("{noun}", noun);
    if j >= k {
        name.push_str(&format!(" #{}", j / k + 1));
    }
    let mut rng = Rng::new(seed, &format!("price/{i}"));
    let (lo, hi) = w.cents;
    let x = rng.below(1001) as u64;
    let cents = lo + (hi - lo) * x * x / 1_000_000;
    let ending = if rng.chance(0.7) { 99 } else { 49 };
    let cents = (cents / 100 * 100 + ending).max(lo);
    PlannedProduct {
        name,
        price: Price { cents },
        category,
        description: format!("{adjective} {} from {brand}.", noun.to_lowercase()),
        popularity,
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Shopper `u`: a name, an address unique to the seed, two or three preferred categories and an
/// activity level.
fn user(seed: u64, u: usize, category_weights: &[f64]) -> PlannedUser {
    let mut rng = Rng::new(seed, &format!("user/{u}"));
    let first = FIRST_NAMES[rng.below(FIRST_NAMES.len())];
    let last = LAST_NAMES[rng.below(LAST_NAMES.len())];
    let wanted = (2 + rng.below(2)).min(category_weights.len());
    let mut taste = Vec::with_capacity(wanted);
    while taste.len() < wanted {
        let c = rng.weighted(category_weights);
        if !taste.contains(&c) {
            taste.push(c);
        }
    }
    let activity = 0.2 + 3.0 * rng.unit().powi(2);
    PlannedUser {
        name: format!("{first} {last}"),
        email: format!(
            "{}.{}.{u}@shoppers-{seed}.demo.example",
            first.to_lowercase(),
            last.to_lowercase()
        ),
        taste,
        activity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn plan() -> Plan {
        Plan::new(42, 12, 1000, 500).unwrap()
    }

    #[test]
    /// The same seed plans the same data; another seed other data; a larger catalog keeps the
    /// smaller one as its beginning.
    fn the_seed_decides_everything() {
        let (a, b) = (plan(), plan());
        let names = |p: &Plan| {
            p.products
                .iter()
                .map(|p| p.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&a), names(&b));
        assert_eq!(a.actions(5_000), b.actions(5_000));
        let other = Plan::new(43, 12, 1000, 500).unwrap();
        assert_ne!(names(&a), names(&other));
        assert_ne!(a.actions(5_000), other.actions(5_000));
        let bigger = Plan::new(42, 12, 2000, 500).unwrap();
        assert_eq!(names(&a), names(&bigger)[..1000]);
        assert_eq!(a.users[7].email, bigger.users[7].email);
    }

    #[test]
    /// Names are unique, every category has products, prices are cents in the category's range.
    fn the_catalog_is_unique_and_priced_in_range() {
        let plan = Plan::new(7, 14, 6000, 10).unwrap();
        let names: HashSet<&str> = plan.products.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), 6000);
        for p in &plan.products {
            let (lo, hi) = CATEGORIES[p.category].cents;
            assert!(p.price.cents >= lo && p.price.cents <= hi + 99, "{p:?}");
            assert!(p.name.len() <= 200 && !p.name.is_empty());
            let shown = p.price.to_string();
            let (units, cents) = shown.split_once('.').unwrap();
            assert_eq!(cents.len(), 2, "{shown}");
            assert_eq!(
                units.parse::<u64>().unwrap() * 100 + cents.parse::<u64>().unwrap(),
                p.price.cents
            );
        }
        assert_eq!(Price { cents: 705 }.to_string(), "7.05");
        let emails: HashSet<&str> = plan.users.iter().map(|u| u.email.as_str()).collect();
        assert_eq!(emails.len(), 10);
        assert!(Plan::new(7, 15, 10, 10).is_err());
        assert!(Plan::new(7, 0, 10, 10).is_err());
    }

    #[test]
    /// Popularity is Zipf-like: the tenth of the products with the highest weight draws about
    /// half of the views, the bottom half a small share; the count is exact.
    fn a_few_products_draw_most_views() {
        let plan = plan();
        let actions = plan.actions(50_000);
        assert_eq!(actions.len(), 50_000);
        let mut views = vec![0u64; plan.products.len()];
        for a in actions.iter().filter(|a| a.kind == Kind::View) {
            views[a.product] += 1;
        }
        let total: u64 = views.iter().sum();
        let mut by_weight: Vec<usize> = (0..plan.products.len()).collect();
        by_weight.sort_by(|&a, &b| {
            let weight = |i: usize| {
                let p = &plan.products[i];
                p.popularity / plan.in_category[p.category].1.last().unwrap()
            };
            weight(b).total_cmp(&weight(a))
        });
        let share =
            |ids: &[usize]| ids.iter().map(|&i| views[i]).sum::<u64>() as f64 / total as f64;
        let head = share(&by_weight[..100]);
        let tail = share(&by_weight[500..]);
        assert!(head > 0.4, "head share {head}");
        assert!(tail < 0.2, "tail share {tail}");
        // The planned favourite gets more views than the median product by far.
        assert!(views[by_weight[0]] > 10 * views[by_weight[500]].max(1));
    }

    #[test]
    /// Views far outnumber cart adds, cart adds outnumber purchases, and every removal or
    /// purchase follows an add of the same product by the same shopper.
    fn funnels_are_plausible() {
        let plan = plan();
        let actions = plan.actions(50_000);
        let counts = PerKind::of(&actions);
        assert_eq!(counts.total(), 50_000);
        assert!(counts.views > 5 * counts.cart_adds, "{counts:?}");
        assert!(counts.cart_adds > counts.purchases, "{counts:?}");
        assert!(counts.purchases > counts.cart_removes, "{counts:?}");
        assert!(counts.cart_removes > 0, "{counts:?}");
        let mut in_cart: HashMap<(usize, usize), i64> = HashMap::new();
        for a in &actions {
            let held = in_cart.entry((a.user, a.product)).or_default();
            match a.kind {
                Kind::CartAdd => *held += 1,
                Kind::CartRemove | Kind::Purchase => {
                    assert!(*held > 0, "{a:?} without an add before it");
                    *held -= 1;
                }
                Kind::View => {}
            }
        }
    }

    #[test]
    /// Every action lies within the span before the anchor, spread over most of its days; each
    /// shopper mostly acts in the categories they prefer.
    fn actions_spread_over_the_month_and_follow_taste() {
        let plan = plan();
        let actions = plan.actions(50_000);
        let days: HashSet<i64> = actions.iter().map(|a| a.seconds_before / 86_400).collect();
        assert!(actions
            .iter()
            .all(|a| a.seconds_before > 0 && a.seconds_before <= SPAN_SECS));
        assert!(days.len() >= 28, "{} days", days.len());
        let recent = actions
            .iter()
            .filter(|a| a.seconds_before < 7 * 86_400)
            .count();
        assert!(recent > actions.len() / 4, "{recent} in the last week");
        let liked = actions
            .iter()
            .filter(|a| {
                plan.users[a.user]
                    .taste
                    .contains(&plan.products[a.product].category)
            })
            .count();
        assert!(liked as f64 > 0.75 * actions.len() as f64, "{liked}");
    }

    #[test]
    /// Batches hold at most 1000 actions, every action once, and a shopper's actions in one batch
    /// unless they need more than one.
    fn batches_keep_shoppers_whole() {
        let plan = Plan::new(3, 10, 200, 40).unwrap();
        for total in [10, 999, 1000, 1001, 25_000, 60_000] {
            let batches = plan.batches(total);
            let flat: Vec<PlannedAction> = batches.iter().flat_map(|b| b.actions.clone()).collect();
            assert_eq!(flat, plan.actions(total));
            let budgets = plan.budgets(total);
            let mut seen = vec![0usize; budgets.len()];
            for batch in &batches {
                assert!(!batch.actions.is_empty() && batch.actions.len() <= MAX_BATCH);
                for &(user, through) in &batch.through {
                    seen[user] += batch.actions.iter().filter(|a| a.user == user).count();
                    assert_eq!(through, seen[user]);
                    if budgets[user] <= MAX_BATCH {
                        assert_eq!(through, budgets[user], "shopper {user} split");
                    }
                }
            }
        }
    }
}
