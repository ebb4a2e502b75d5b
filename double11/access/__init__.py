"""Who may do what: roles, signed tokens, and the checks of each call.

- `roles.py`: the four roles (buyer, merchant, gateway, operator; and the
  metrics scraper) and a `Principal` (a role and the id it acts as).
- `tokens.py`: the festival's key (in the data folder) and its tokens: JWTs
  signed with HMAC-SHA256 by PyJWT, verified once and then cached.
- `policy.py`: the one table of who may call which route and command.
- `commands.py`: a batch's commands checked against their principals, in one
  vectorized pass on the engine thread just before the batch is applied:
  a refused command gets its code in the batch's `invalid` column, so the
  log replays the same refusal and nothing else changes.
- `reads.py`: whether a principal may see a view it asked for.

The HTTP front authenticates and checks a route's roles; what depends on the
state (whose checkout this is) is checked where the state is.
"""
