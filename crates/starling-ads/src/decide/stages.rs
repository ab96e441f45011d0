//! The stages of one decision, each over named values: the request checked, the context's
//! vector, candidates, filters, the best creative per group, the auction.

use super::*;

impl AdServer {
    /// Refuses requests out of bounds, naming the field.
    pub(super) fn check_request(&self, req: &DecideRequest) -> Result<()> {
        if req.slots == 0 || req.slots > self.config.max_slots {
            return Err(Error::invalid(
                "slots",
                format!("{} slots (1 to {})", req.slots, self.config.max_slots),
            ));
        }
        if req.user_id.is_empty() || req.user_id.len() > 256 {
            return Err(Error::invalid("user_id", "1 to 256 bytes"));
        }
        if req.exclude_advertisers.len() > 1_000 {
            return Err(Error::invalid("exclude_advertisers", "at most 1,000"));
        }
        if req.context.text.chars().count() > 20_000 {
            return Err(Error::invalid("context.text", "at most 20,000 characters"));
        }
        Ok(())
    }

    /// The context's vector: given (checked and normalised) or embedded from its text.
    pub(super) fn context_vector(
        &self,
        req: &DecideRequest,
        ix: &Index,
    ) -> Result<Option<Vec<f32>>> {
        match &req.context.vector {
            Some(v) => {
                if v.len() != ix.dim || v.iter().any(|x| !x.is_finite()) {
                    return Err(Error::invalid(
                        "context.vector",
                        format!(
                            "{} finite values expected, the embedder's dimension",
                            ix.dim
                        ),
                    ));
                }
                let mut v = v.clone();
                normalize(&mut v);
                Ok(Some(v))
            }
            None => Ok(self.embed_one(&req.context.text)?.map(|(_, v)| v)),
        }
    }

    /// Groups whose keywords the context holds, then the groups most similar to the context
    /// (above their floor); in group order, with how many came from keywords.
    pub(super) fn candidates(
        &self,
        ix: &Index,
        ctx_terms: &[String],
        vector: Option<&[f32]>,
    ) -> (Vec<Candidate>, usize) {
        let mut keyword: HashSet<usize> = HashSet::new();
        for t in ctx_terms {
            if let Some(gs) = ix.keywords.get(t) {
                keyword.extend(gs.iter().copied());
            }
        }
        let keyword_count = keyword.len();
        let mut all: HashSet<usize> = keyword.clone();
        let mut group_sim: HashMap<usize, f32> = HashMap::new();
        if let Some(v) = vector.filter(|_| self.config.semantic) {
            for (row, &g) in ix.vector_group.iter().enumerate() {
                let s = fast_dot(v, &ix.vectors[row * ix.dim..(row + 1) * ix.dim]);
                group_sim.insert(g, s);
            }
            let mut semantic: Vec<(usize, f32)> = group_sim
                .iter()
                .filter(|(g, s)| **s as f64 >= ix.groups[**g].group.min_similarity)
                .map(|(g, s)| (*g, *s))
                .collect();
            semantic.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            semantic.truncate(self.config.max_semantic_candidates);
            all.extend(semantic.into_iter().map(|(g, _)| g));
        }
        let mut out: Vec<Candidate> = all
            .into_iter()
            .map(|group| Candidate {
                group,
                keyword: keyword.contains(&group),
                similarity: group_sim.get(&group).copied().unwrap_or(0.0),
            })
            .collect();
        out.sort_unstable_by_key(|c| c.group);
        (out, keyword_count)
    }

    /// The candidates that may serve now: schedule, targeting, exclusions, budget, frequency
    /// cap, pacing; each kept one with its bid (target CPC bids from its bidder). Drops counted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn filter(
        &self,
        ix: &Index,
        req: &DecideRequest,
        candidates: Vec<Candidate>,
        ctx_terms: &[String],
        now_ms: i64,
        rng: &mut impl Rng,
        dropped: &mut Dropped,
    ) -> Result<Vec<Eligible>> {
        let day = day_of(now_ms);
        let hour = now_ms.rem_euclid(DAY_MS) / 3_600_000;
        let term_set: HashSet<&str> = ctx_terms.iter().map(String::as_str).collect();
        let lang = req.language.as_deref().map(str::to_lowercase);
        let mut kept = Vec::new();
        let mut live = self.live.lock().map_err(lock_err)?;
        let mut paced: HashMap<usize, bool> = HashMap::new();
        for cand in candidates {
            let ge = &ix.groups[cand.group];
            let c = &ix.campaigns[ge.campaign];
            if !c.live_at(now_ms)
                || ge.group.status != Status::Active
                || !ge.group.serves_hour(hour)
            {
                dropped.schedule += 1;
                continue;
            }
            if (!ge.group.languages.is_empty()
                && !lang
                    .as_ref()
                    .is_some_and(|l| ge.group.languages.contains(l)))
                || (!ge.group.placements.is_empty()
                    && !ge.group.placements.contains(&req.placement))
            {
                dropped.targeting += 1;
                continue;
            }
            if c.excluded_terms
                .iter()
                .any(|t| term_set.contains(t.as_str()))
                || req.exclude_advertisers.contains(&c.advertiser_id)
            {
                dropped.exclusion += 1;
                continue;
            }
            let spent = match live.spend.get(&c.id) {
                Some((d, s)) if *d == day => *s,
                _ => 0,
            };
            if spent >= c.daily_budget_micros {
                dropped.budget += 1;
                continue;
            }
            if c.frequency_cap > 0 {
                let key = (req.user_id.clone(), c.id.clone());
                let window = c.frequency_window_s * 1000;
                let recent = live
                    .seen
                    .get(&key)
                    .map_or(0, |q| q.iter().filter(|&&t| t > now_ms - window).count());
                if recent as i64 >= c.frequency_cap {
                    dropped.frequency += 1;
                    continue;
                }
            }
            if self.config.pace {
                let admitted = *paced.entry(ge.campaign).or_insert_with(|| {
                    let p = live
                        .pacers
                        .entry(c.id.clone())
                        .or_insert_with(|| Pacer::new(now_ms));
                    p.update(&self.config.pacing, now_ms, spent, c.daily_budget_micros);
                    p.admits(rng.gen())
                });
                if !admitted {
                    dropped.pacing += 1;
                    continue;
                }
            }
            let bid = match c.bid_type {
                BidType::TargetCpc => live
                    .target
                    .get(&ge.group.id)
                    .cloned()
                    .unwrap_or_default()
                    .bid(ge.group.bid_micros)
                    .clamp(1, MAX_BID),
                _ => ge.group.bid_micros,
            };
            kept.push(Eligible { cand, bid });
        }
        Ok(kept)
    }

    /// The creative of each eligible group with the highest pCTR, as that group's bidder.
    pub(super) fn best_creatives(
        &self,
        ix: &Index,
        req: &DecideRequest,
        eligible: Vec<Eligible>,
        ctx_terms: &[String],
        vector: Option<&[f32]>,
        rng: &mut impl Rng,
    ) -> Result<Vec<Bidder>> {
        let mut terms_used = ctx_terms.to_vec();
        terms_used.truncate(MAX_TERMS);
        let model = self.model.read().map_err(lock_err)?;
        let mut bidders = Vec::new();
        for e in eligible {
            let ge = &ix.groups[e.cand.group];
            let mut best: Option<Bidder> = None;
            for &ci in &ge.creatives {
                let ce = &ix.creatives[ci];
                if ce.creative.status != Status::Active {
                    continue;
                }
                let similarity = match (vector, &ce.vector) {
                    (Some(v), Some(cv)) => fast_dot(v, cv).max(e.cand.similarity),
                    _ => e.cand.similarity,
                };
                let features = AdFeatures {
                    creative: ce.creative.id.clone(),
                    group: ge.group.id.clone(),
                    advertiser: ge.group.advertiser_id.clone(),
                    placement: req.placement,
                    position: 0,
                    terms: terms_used.clone(),
                    similarity,
                    keyword_match: e.cand.keyword,
                };
                let pctr = if self.config.random_pctr {
                    rng.gen::<f64>() * 2.0 * self.config.ftrl.prior_ctr
                } else {
                    model.predict(&features)
                };
                if best.as_ref().is_none_or(|b| pctr > b.pctr) {
                    best = Some(Bidder {
                        creative: ci,
                        features,
                        pctr,
                        similarity,
                        keyword: e.cand.keyword,
                        bid: e.bid,
                    });
                }
            }
            bidders.extend(best);
        }
        Ok(bidders)
    }

    /// One ad per campaign (its best group), a GSP auction over the slots, and the winners as
    /// ads with sealed impression ids.
    pub(super) fn auction(
        &self,
        ix: &Index,
        req: &DecideRequest,
        bidders: &[Bidder],
        now_ms: i64,
        rng: &mut impl Rng,
    ) -> Vec<AdSlot> {
        let mut bids: Vec<Bid> = Vec::new();
        let mut best_of_campaign: HashMap<usize, usize> = HashMap::new();
        for (i, b) in bidders.iter().enumerate() {
            let ge = &ix.groups[ix.creatives[b.creative].group];
            let bid = Bid {
                key: i,
                bid_micros: b.bid,
                per_impression: ix.campaigns[ge.campaign].bid_type == BidType::Cpm,
                pctr: b.pctr,
                quality: 1.0,
            };
            match best_of_campaign.get(&ge.campaign) {
                Some(&j) if bids[j].score() >= bid.score() => {}
                Some(&j) => bids[j] = bid,
                None => {
                    best_of_campaign.insert(ge.campaign, bids.len());
                    bids.push(bid);
                }
            }
        }
        let wins = auction::run(&bids, req.slots, self.config.reserve_cpm_micros);
        wins.into_iter()
            .map(|w| {
                let b = &bidders[w.key];
                let ce = &ix.creatives[b.creative];
                let ge = &ix.groups[ce.group];
                let c = &ix.campaigns[ge.campaign];
                let mut features = b.features.clone();
                features.position = w.position;
                let facts = ImpressionFacts {
                    nonce: format!("{:016x}", rng.gen::<u64>()),
                    advertiser: ge.group.advertiser_id.clone(),
                    campaign: c.id.clone(),
                    group: ge.group.id.clone(),
                    creative: ce.creative.id.clone(),
                    user: req.user_id.clone(),
                    placement: req.placement,
                    position: w.position,
                    ts_ms: now_ms,
                    price_micros: w.price_micros,
                    per_impression: c.bid_type == BidType::Cpm,
                    features,
                };
                AdSlot {
                    impression_id: self.sealer.seal(&facts),
                    position: w.position,
                    creative_id: ce.creative.id.clone(),
                    text: ce.creative.text.clone(),
                    url: ce.creative.url.clone(),
                    group_id: ge.group.id.clone(),
                    campaign_id: c.id.clone(),
                    advertiser_id: ge.group.advertiser_id.clone(),
                    bid_type: c.bid_type,
                    price_micros: w.price_micros,
                    pctr: b.pctr,
                    similarity: b.similarity,
                    keyword_match: b.keyword,
                }
            })
            .collect()
    }
}
