"""Building data sets: GenerAlign-style preference data (prompts -> generators -> judges -> pairs -> filters).

    from w2s.data.recipe import load_recipe
    from w2s.data.build import build
    build(load_recipe("recipes/tiny/data.yaml", {"output_dir": "out/tiny-data"}))

Modules: `recipe` (the YAML recipe), `prompts` (sources), `generators`, `judges`,
`pairing`, `filters`, `card`, `build` (the resumable, sharded runner), `binarize`
(rated sets into pairs); `w2s.data.world` holds the tiny world.
"""
