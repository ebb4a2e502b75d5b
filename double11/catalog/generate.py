"""A synthetic festival catalog shaped like Tmall/Taobao on 11.11, fully vectorized.

Row order means something:

- **SKU rows are in popularity rank**: row 0 is the hottest SKU, row 1 the next, ...  Load
  generators draw SKU *rows* Zipf-distributed by row number (see ``popularity_weights``), so
  the first rows get most of the traffic.  The hottest rows are flash deals whose stock is
  small against their demand, so they sell out during a benchmark; the long tail has
  moderate stock and does not.
- Merchant rows are in size rank (row 0 has the most SKUs); the first ones are the Tmall
  flagship stores of famous brands.  SKUs per merchant are Zipf-skewed: a few giant brand
  stores, a long tail of small Taobao shops with a handful of SKUs each.
- Brand rows start with the famous brands (Apple, Estee Lauder, Gap, L'Oreal, Nike, Samsung,
  Uniqlo, Zara, then Xiaomi, Huawei, Haier, Li-Ning, ...); the rest have generated names.
  62% of brands are international (non-CN origin): at full scale (1,000,000 SKUs, so
  100,000 brands) that is over the 60,000 international brands of the 2017 festival.

Ids are dense: merchant, brand and SKU ids are row + 1; returning buyers are 1..n.
The same arguments and seed always give the same catalog.
"""

from __future__ import annotations

import numpy as np

from double11 import geo, limits
from double11.catalog.model import MARKETPLACES, Catalog

TMALL, TAOBAO, JUHUASUAN, ALIEXPRESS, TMALL_GLOBAL = range(len(MARKETPLACES))
MARKETPLACE_SHARE = np.array([0.15, 0.65, 0.05, 0.07, 0.08])  # order of MARKETPLACES
INTERNATIONAL_SHARE = 0.62

# (name, origin); CN origin means a domestic brand.  Order is fame: the first are the top
# international sellers named in the 2017 reports, then the big domestic names.
FAMOUS_BRANDS: tuple[tuple[str, str], ...] = (
    ("Apple", "US"), ("Estee Lauder", "US"), ("Gap", "US"), ("L'Oreal", "FR"),
    ("Nike", "US"), ("Samsung", "KR"), ("Uniqlo", "JP"), ("Zara", "ES"),
    ("Xiaomi", "CN"), ("Huawei", "CN"), ("Haier", "CN"), ("Li-Ning", "CN"),
    ("Adidas", "DE"), ("Lancome", "FR"), ("Shiseido", "JP"), ("Midea", "CN"),
    ("SK-II", "JP"), ("Sony", "JP"), ("Dyson", "GB"), ("Anta", "CN"),
    ("Philips", "NL"), ("Lego", "DK"), ("Swisse", "AU"), ("Lenovo", "CN"),
    ("Oppo", "CN"), ("Innisfree", "KR"), ("H&M", "SE"), ("Muji", "JP"),
    ("Gree", "CN"), ("a2 Milk", "NZ"), ("Clarins", "FR"), ("Canon", "JP"),
    ("Three Squirrels", "CN"), ("Bosideng", "CN"), ("Olay", "US"), ("Levi's", "US"),
    ("New Balance", "US"), ("Vivo", "CN"), ("Sulwhasoo", "KR"), ("Bosch", "DE"),
    ("Perfect Diary", "CN"), ("Pechoin", "CN"), ("Kao", "JP"), ("Gucci", "IT"),
    ("Yili", "CN"), ("Supor", "CN"), ("Pampers", "US"), ("Braun", "DE"),
)

# Where international brands and Tmall Global merchants come from, with weights.
ABROAD = ("US", "JP", "KR", "DE", "FR", "AU", "GB", "IT", "NZ", "NL", "ES", "CH", "CA",
          "SE", "DK", "TH", "SG", "BE", "IE", "IL")
ABROAD_WEIGHT = np.array([20, 16, 12, 8, 8, 7, 6, 5, 3, 3, 2, 2, 2, 1, 1, 1, 1, 0.5, 0.3, 0.2])
_ABROAD_P = ABROAD_WEIGHT / ABROAD_WEIGHT.sum()

# Word lists for generated names; mixed-radix combinations keep names mostly distinct.
_WEST_HEAD = ("Aur", "Bel", "Cal", "Cor", "Del", "Ev", "Fel", "Gal", "Hal", "Iv", "Jul", "Kel",
              "Lum", "Mar", "Nor", "Or", "Pel", "Quin", "Ros", "Sol", "Tav", "Val", "Wil", "Zel",
              "Am", "Bri", "Cas", "Dor", "El", "Fin", "Gr", "Har", "Lor", "Mont", "Nov", "Ost")
_WEST_MID = ("a", "e", "i", "o", "ar", "en", "is", "on", "el", "an")
_WEST_TAIL = ("ra", "lin", "ton", "via", "ne", "ssa", "ix", "da", "co", "ley", "more", "ford",
              "elle", "ique", "berg", "sen", "ard", "ia", "wood", "field")
_WEST_WORD = ("", " Beauty", " Home", " Sport", " Kids", " Living", " Organics", " Lab",
              " & Co", " Paris", " London", " Naturals", " Outdoor", " Skin", " Pet", " Baby")
_PINYIN = ("Hua", "Xin", "Mei", "Jia", "Long", "Tian", "Bai", "Hong", "Jin", "Kang", "Le",
           "Ming", "Qing", "Rui", "Shun", "Tai", "Wen", "Xiang", "Yue", "Zhong", "An", "Bao",
           "Chen", "Da", "Fu", "Guang", "Hai", "Li", "Nan", "Ping", "Sheng", "Yang", "Yu", "Zhi")
_PINYIN_LOWER = tuple(p.lower() for p in _PINYIN)
_CN_WORD = ("", " Home", " Care", " Textile", " Lighting", " Wine", " Snacks", " Fitness",
            " Jewelry", " Optical", " Dairy", " Paper", " Ceramics", " Stationery", " Cosmetics",
            " Tech", " Foods", " Tea", " Beauty", " Apparel", " Kids", " Electric", " Sports",
            " Living", " Outdoor", " Baby", " Pets", " Audio", " Kitchen", " Toys", " Bags",
            " Shoes", " Health", " Garden", " Digital", " Craft")
_SHOP_ADJ = ("Happy", "Little", "Golden", "Sunny", "Lucky", "Red", "Jade", "Lotus", "Panda",
             "Silk", "Cozy", "Fresh", "Sweet", "Bamboo", "Cloud", "Star", "Moon", "Pearl",
             "Spring", "Maple", "Ocean", "Orchid", "Plum", "Tiger", "Dragon", "Phoenix")
_SHOP_NOUN = ("Home", "Tea", "Fashion", "Toys", "Beauty", "Digital", "Snacks", "Shoes", "Bags",
              "Baby", "Kitchen", "Garden", "Pets", "Books", "Sports", "Outdoor", "Jewelry",
              "Crafts", "Phone Cases", "Knitwear", "Cosmetics", "Furniture", "Lighting")
_SHOP_KIND = ("Shop", "Store", "Boutique", "House", "Corner", "Workshop", "Emporium", "Studio")
_CITY = ("Shenzhen", "Guangzhou", "Yiwu", "Hangzhou", "Dongguan", "Shanghai", "Ningbo", "Xiamen")
_TRADE = ("Trading", "Technology", "Electronics", "Industrial", "Global", "Import & Export")
_TMALL_KIND = ("Specialty Store", "Franchise Store", "Official Store")
_GLOBAL_KIND = ("Overseas Flagship Store", "Global Store", "Overseas Direct Store")
# Product names: brand + category + model ("Haier Rice Cooker K260").
_CATEGORY = ("Phone", "Phone Case", "Earbuds", "Smart Watch", "Tablet", "Laptop", "Power Bank",
             "Face Cream", "Serum", "Lipstick", "Sunscreen", "Shampoo", "Perfume", "Face Mask",
             "Down Jacket", "Sweater", "Jeans", "Running Shoes", "Sneakers", "Backpack", "Handbag",
             "Rice Cooker", "Air Fryer", "Vacuum Cleaner", "Air Purifier", "Kettle", "Blender",
             "Coffee Maker", "Television", "Refrigerator", "Washing Machine", "Desk Lamp",
             "Infant Formula", "Diapers", "Building Set", "Vitamin C", "Green Tea", "Mixed Nuts",
             "Yoga Mat", "Suitcase")
_MODEL_LETTERS = tuple("ABCDEFGHJKLMNPRSTVXZ")
_MODEL_NUMBERS = (1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 15, 20, 30, 50, 60, 70, 80, 90, 100, 120, 150, 200,
                  220, 260, 300, 360, 500, 520, 600, 700, 800, 900, 1000, 2000)

# Merchant sizes and SKU popularity.
MERCHANT_SIZE_EXPONENT = 0.9  # SKUs per merchant ~ 1 / rank**0.9: top 1% own ~40% of SKUs
BRAND_FAME_EXPONENT = 0.8  # how often a brand is chosen ~ 1 / rank**0.8
# Popularity score of a SKU = merchant pull - SKU_DECAY * log(its rank in the store) + noise,
# merchant pull = SIZE_PULL * log(store size) + marketplace pull + MERCHANT_NOISE.  Every store
# has a few hero items and a tail, so the hottest SKUs are the heroes of the big (mostly
# Tmall) stores, spread over many of them rather than all from the single biggest.
SIZE_PULL = 0.5
MARKETPLACE_PULL = np.array([2.0, 0.0, 1.5, -1.0, 1.0])
MERCHANT_NOISE = 1.0
SKU_DECAY = 1.0
SKU_NOISE = 0.5
OWN_BRAND_SHARE = 0.85  # of a Tmall / Tmall Global store's SKUs that carry its main brand


def popularity_weights(n_skus: int, exponent: float = 1.1) -> np.ndarray:
    """Zipf weights over SKU rows (row 0 hottest), float64, summing to 1."""
    if n_skus < 0 or exponent < 0:
        raise ValueError("n_skus and exponent must not be negative")
    w = np.arange(1, n_skus + 1, dtype=np.float64) ** -exponent
    return w / w.sum() if n_skus else w


def default_brands(skus: int) -> int:
    return max(50, skus // 10)


def generate_catalog(merchants: int, skus: int, seed: int, brands: int | None = None,
                     returning_buyers: int = 0) -> Catalog:
    """A realistic catalog of the given size; the same arguments give the same catalog."""
    brands = default_brands(skus) if brands is None else brands
    if not 1 <= merchants <= limits.catalog_merchants_max:
        raise ValueError(f"merchants must be 1..{limits.catalog_merchants_max}")
    if not 0 <= skus <= limits.catalog_skus_max:
        raise ValueError(f"skus must be 0..{limits.catalog_skus_max}")
    if not 1 <= brands <= limits.catalog_skus_max or returning_buyers < 0:
        raise ValueError("brands must be at least 1 and returning_buyers not negative")
    # One independent stream per part, so e.g. a change to pricing leaves brands alone.
    # (a stream added later is spawned after the others: theirs stay as they were)
    r_brand, r_merchant, r_sku, r_price, r_stock, r_name = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6))

    b_name, b_intl, b_origin, b_fame = _brands(r_brand, brands)
    m_market, m_country, m_main, sizes = _merchants(r_merchant, merchants, skus, b_intl, b_fame)
    flagships = _flagships(merchants, brands)
    m_name = _merchant_names(r_merchant, m_market, m_main, b_name, flagships)
    owner, brand = _skus(r_sku, sizes, m_market, m_main, flagships, b_intl, b_fame)
    price = _prices(r_price, skus)
    stock = _stock(r_stock, skus)
    sku_name = _product_names(r_name, brand, b_name)

    return Catalog(
        merchant_id=np.arange(1, merchants + 1, dtype=np.int64),
        merchant_name=m_name,
        merchant_marketplace=m_market.astype(np.uint8),
        merchant_country=m_country,
        brand_id=np.arange(1, brands + 1, dtype=np.int64),
        brand_name=b_name,
        brand_international=b_intl,
        brand_origin=b_origin,
        sku_id=np.arange(1, skus + 1, dtype=np.int64),
        sku_merchant=owner.astype(np.int64) + 1,
        sku_brand=brand.astype(np.int64) + 1,
        sku_price_fen=price,
        sku_stock=stock,
        returning_buyers=np.arange(1, returning_buyers + 1, dtype=np.int64),
        sku_name=sku_name,
    )


def _codes(alpha2: tuple[str, ...]) -> np.ndarray:
    return np.array([geo.encode(a) for a in alpha2], dtype=np.uint16)


def _combine(rng: np.random.Generator, n: int, parts: tuple[tuple[str, ...], ...]) -> list[str]:
    """n names, each a concatenation of one word from every part, distinct while they last."""
    radix = [len(p) for p in parts]
    capacity = int(np.prod(radix))
    if n <= capacity:
        index = rng.choice(capacity, n, replace=False)
        repeat = np.zeros(n, dtype=np.int64)
    else:  # more names than combinations: number the repeats ("Huaxin Home 2")
        drawn = rng.permutation(n)
        index, repeat = drawn % capacity, drawn // capacity
    names = np.full(n, "", dtype=object)
    for words, r in zip(parts, radix):
        names = names + np.array(words, dtype=object)[index % r]
        index //= r
    numbered = repeat > 0
    names[numbered] = names[numbered] + " " + (repeat[numbered] + 1).astype(str).astype(object)
    return names.tolist()


def _brands(rng: np.random.Generator, n: int):
    famous = FAMOUS_BRANDS[:n]
    tail = n - len(famous)
    famous_intl = np.array([o != "CN" for _, o in famous], dtype=bool)
    # Enough international brands in the tail to reach the share over the whole list.
    tail_intl = min(tail, max(0, int(np.ceil(INTERNATIONAL_SHARE * n)) - int(famous_intl.sum())))
    intl = np.zeros(tail, dtype=bool)
    intl[rng.choice(tail, tail_intl, replace=False)] = True

    names = np.empty(tail, dtype=object)
    names[intl] = _combine(rng, tail_intl, (_WEST_HEAD, _WEST_MID, _WEST_TAIL, _WEST_WORD))
    names[~intl] = _combine(rng, tail - tail_intl, (_PINYIN, _PINYIN_LOWER, _CN_WORD))
    origin = np.full(tail, geo.encode("CN"), dtype=np.uint16)
    origin[intl] = _codes(ABROAD)[rng.choice(len(ABROAD), tail_intl, p=_ABROAD_P)]

    fame = np.arange(1, n + 1, dtype=np.float64) ** -BRAND_FAME_EXPONENT
    return (
        [name for name, _ in famous] + names.tolist(),
        np.concatenate([famous_intl, intl]),
        np.concatenate([_codes(tuple(o for _, o in famous)), origin]),
        fame / fame.sum(),
    )


def _flagships(merchants: int, brands: int) -> int:
    """How many merchant rows, from row 0, are the Tmall flagship stores of famous brands 0, 1, 2, ..."""
    return min(len(FAMOUS_BRANDS), brands, merchants // 20)


def _draw(rng: np.random.Generator, weights: np.ndarray, size: int,
          allowed: np.ndarray | None = None) -> np.ndarray:
    """Indexes drawn by weight, optionally among the allowed ones only."""
    if allowed is None:
        return rng.choice(len(weights), size, p=weights)
    pool = np.flatnonzero(allowed)
    w = weights[pool]
    return pool[rng.choice(len(pool), size, p=w / w.sum())]


def _merchants(rng, n: int, skus: int, b_intl: np.ndarray, b_fame: np.ndarray):
    # Sizes: Zipf by row, at least one SKU each while there are enough SKUs.
    w = np.arange(1, n + 1, dtype=np.float64) ** -MERCHANT_SIZE_EXPONENT
    w /= w.sum()
    base = 1 if skus >= n else 0
    sizes = base + rng.multinomial(skus - base * n, w)

    # Marketplace: the biggest 1% lean to Tmall; the rest are drawn so the overall mix
    # still matches MARKETPLACE_SHARE.
    top = max(1, n // 100)
    top_share = np.array([0.70, 0.10, 0.03, 0.02, 0.15])
    rest_share = np.clip(MARKETPLACE_SHARE * n - top_share * top, 0, None)
    rest_share = rest_share / rest_share.sum() if n > top else top_share
    market = np.concatenate([rng.choice(5, top, p=top_share), rng.choice(5, n - top, p=rest_share)])
    flagships = _flagships(n, len(b_intl))
    market[:flagships] = TMALL

    # Home country: Tmall Global sells imports from abroad; a few others are from HK / TW.
    country = np.full(n, geo.encode("CN"), dtype=np.uint16)
    glob = market == TMALL_GLOBAL
    country[glob] = _codes(ABROAD)[rng.choice(len(ABROAD), int(glob.sum()), p=_ABROAD_P)]
    near = ~glob & (rng.random(n) < 0.01)
    country[near] = _codes(("HK", "TW"))[rng.integers(0, 2, int(near.sum()))]

    # Main brand: flagships carry their famous brand, Tmall Global stores an international one.
    main = _draw(rng, b_fame, n)
    main[glob] = _draw(rng, b_fame, int(glob.sum()), allowed=b_intl) if b_intl.any() else main[glob]
    main[:flagships] = np.arange(flagships)
    return market, country, main, sizes


def _merchant_names(rng, market: np.ndarray, main: np.ndarray, b_name: list[str],
                    flagships: int) -> list[str]:
    n = len(market)
    brand = np.array(b_name, dtype=object)[main]

    def pick(words: tuple[str, ...]) -> np.ndarray:
        return np.array(words, dtype=object)[rng.integers(0, len(words), n)]

    shop = pick(_SHOP_ADJ) + " " + pick(_SHOP_NOUN) + " " + pick(_SHOP_KIND)
    names = np.select(
        [market == TMALL, market == TMALL_GLOBAL, market == JUHUASUAN, market == ALIEXPRESS],
        [brand + " " + pick(_TMALL_KIND), brand + " " + pick(_GLOBAL_KIND), shop + " Deals",
         pick(_CITY) + " " + pick(_PINYIN) + pick(_PINYIN_LOWER) + " " + pick(_TRADE) + " Store"],
        default=shop,
    )
    names[:flagships] = brand[:flagships] + " Flagship Store"
    return names.tolist()


def _skus(rng, sizes: np.ndarray, market: np.ndarray, main: np.ndarray, flagships: int,
          b_intl: np.ndarray, b_fame: np.ndarray):
    """Owner and brand of each SKU, rows sorted by popularity (row 0 hottest)."""
    n_skus = int(sizes.sum())
    owner = np.repeat(np.arange(len(sizes)), sizes)
    pull = SIZE_PULL * np.log(np.maximum(sizes, 1)) + MARKETPLACE_PULL[market]
    pull += rng.normal(0.0, MERCHANT_NOISE, len(sizes))
    rank_in_store = np.arange(n_skus) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    score = pull[owner] - SKU_DECAY * np.log1p(rank_in_store) + rng.normal(0.0, SKU_NOISE, n_skus)
    owner = owner[np.argsort(-score, kind="stable")]

    brand = _draw(rng, b_fame, n_skus)
    branded = np.isin(market[owner], (TMALL, TMALL_GLOBAL))
    # Flagship stores sell only their own brand; other brand stores mostly theirs.
    own = branded & ((owner < flagships) | (rng.random(n_skus) < OWN_BRAND_SHARE))
    brand[own] = main[owner[own]]
    # Tmall Global imports carry international brands even off their main brand.
    imports = ~own & (market[owner] == TMALL_GLOBAL)
    if b_intl.any():
        brand[imports] = _draw(rng, b_fame, int(imports.sum()), allowed=b_intl)
    # Every brand on offer somewhere (while SKUs last): spread all brands over freely
    # branded SKUs, taking the place of some of their fame-weighted draws.
    free = np.flatnonzero(~own & ~imports)
    k = min(len(free), len(b_fame))
    brand[rng.choice(free, k, replace=False)] = rng.permutation(len(b_fame))[:k]
    return owner, brand


def _product_names(rng: np.random.Generator, brand: np.ndarray, b_name: list[str]) -> list[str]:
    """Brand + category + model for each SKU row: one object-array concatenation
    over a small table of " <category> <model>" endings, not a Python loop
    per SKU (a million SKUs take a fraction of a second)."""
    endings = np.array([f" {c} {letter}{number}" for c in _CATEGORY for letter in _MODEL_LETTERS
                        for number in _MODEL_NUMBERS], dtype=object)
    names = np.array(b_name, dtype=object)[brand] + endings[rng.integers(0, len(endings), len(brand))]
    return names.tolist()


def _prices(rng, n: int) -> np.ndarray:
    """Log-normal around RMB 150 (most RMB 20..2,000), shop endings; 2% big-ticket items
    (phones, appliances, luxury) around RMB 3,000 make the heavy tail up to RMB 30,000."""
    big = rng.random(n) < 0.02
    median = np.where(big, 3000.0, 150.0)
    yuan = np.clip(median * rng.lognormal(0.0, np.where(big, 0.8, 1.0)), 1.0, 29_000.0)
    fen = yuan * 100
    # Round up to a step that grows with the price, then take off a festival ending:
    # 4.99, 29.90, 39.00, 199.00, 259.00, 1999.00, 8900.00 ...
    step = np.select([yuan < 10, yuan < 100, yuan < 1000], [100, 1000, 1000], default=10_000)
    ending = np.select(
        [yuan < 10, yuan < 100, yuan < 1000],
        [np.ones(n), rng.choice([10, 100, 1], n), rng.choice([100, 1000, 100], n)],
        default=rng.choice([100, 10_000, 0], n),
    )
    price = np.ceil(fen / step) * step - ending
    return np.maximum(price, 99).astype(np.int64)


def _stock(rng, n: int) -> np.ndarray:
    """Flash deals at the top (small round lots), moderate log-normal stock in the tail."""
    stock = np.clip(rng.lognormal(np.log(2000.0), 1.0, n), 50, 500_000).astype(np.int64)
    hot = min(n, max(10, n // 1000))
    stock[:hot] = rng.choice(np.array([100, 200, 300, 500, 1000, 2000]), hot)
    return stock
