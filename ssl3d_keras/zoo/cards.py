"""Model cards and the one-screen description of a zoo recipe.

Example:

>>> from ssl3d_keras import zoo
>>> print(zoo.describe("phantom-rotation").splitlines()[0])
phantom-rotation: 3D rotation prediction (3D-Rot) on synthetic phantoms (small, CPU)
"""

import json

from ssl3d_keras.zoo.recipes import get_recipe

__all__ = ["describe", "render_card"]


def describe(name):
    """Human-readable summary of a recipe (what `ssl3d zoo info` prints)."""
    r = get_recipe(name)
    p = r.pretrain
    lines = [
        f"{r.name}: {r.title}",
        "",
        r.description.strip(),
        "",
        f"task:          {p.get('task')}  {json.dumps(p.get('task_config', {}))}",
        f"encoder:       {r.architecture} {json.dumps(p.get('encoder', {}))}",
        f"data:          {r.data.source}",
        f"needs:         {r.data.requires or 'nothing (synthetic phantoms, builds on a CPU)'}",
        f"modality:      {r.data.modality}; channels {r.data.channel_names}",
        f"preprocessing: {r.data.preprocessing}",
        f"optimizer:     {json.dumps(p.get('optimizer', {}))}",
        f"schedule:      steps={p.get('steps')} epochs={p.get('epochs')} "
        f"batch_size={p.get('batch_size')}",
        f"proxy metric:  {r.expected.get('proxy_metric', 'not reported')}",
        f"sourced:       {len(r.sources)} source(s), {len(r.deviations)} deviation(s) from the "
        f"authors' code (ssl3d zoo info {r.name} --card)",
        f"weights:       {r.artifact.url + ' sha256=' + str(r.artifact.sha256) if r.published else r.artifact.status}",  # noqa: E501
    ]
    if not r.published:
        how = (f"ssl3d zoo build {r.name} --data PATH" if r.needs_data
               else f"ssl3d zoo build {r.name}  (or ssl3d_keras.zoo.build('{r.name}'))")
        lines.append(f"build:         {how}")
    return "\n".join(lines)


def render_card(recipe, metadata=None):
    """Model card Markdown of a recipe, with the export's metadata when built.

    Says what to feed the encoder, how it was pretrained, what is known of its
    quality, and how to load it in each client.
    """
    r = recipe
    p = r.pretrain
    d = r.data
    handle = f"{r.name}" if not r.published else f"{r.artifact.url}#sha256={r.artifact.sha256}"
    lines = [
        f"# {r.name}: {r.title}", "",
        r.description.strip(), "",
        "## Status", "",
        f"Weights: {r.artifact.status}." + ("" if r.published else
            (f" Build them with `ssl3d zoo build {r.name} --data PATH` (needs {d.requires})."
             if r.needs_data else
             f" `ssl3d zoo build {r.name}` or `ssl3d_keras.zoo.build(\"{r.name}\")` builds "
             "them on a CPU in minutes and caches them, where "
             f"`ssl3d_keras.load_encoder(\"{r.name}\")` finds them.")),
        "",
        "## Input", "",
        f"- Data: {d.source}",
        f"- Modality: {d.modality}; channels (in order): {', '.join(d.channel_names)}",
        "- Axis order: channels-last `(batch, D, H, W, C)`, canonical RAS voxel order"
        if p.get("data", {}).get("dim", 3) == 3 else "- Axis order: `(batch, H, W, C)`",
        f"- Spacing: {d.spacing if d.spacing else 'native'}",
        f"- Intensity normalisation: {d.normalization}",
        f"- Preprocessing: {d.preprocessing}",
        "",
        "## Pretraining", "",
        f"- Task: `{p.get('task')}` with `{json.dumps(p.get('task_config', {}))}`",
        f"- Encoder: {r.architecture} `{json.dumps(p.get('encoder', {}))}`",
        f"- Optimiser: `{json.dumps(p.get('optimizer', {}))}`",
        f"- Schedule: steps={p.get('steps')}, epochs={p.get('epochs')}, "
        f"batch size {p.get('batch_size')}, input size {p.get('data', {}).get('input_size')}",
        f"- Expected proxy metric: {r.expected.get('proxy_metric', 'not reported')}",
    ]
    if r.expected.get("notes"):
        lines.append(f"- Notes: {r.expected['notes']}")
    if d.downstream:
        lines.append(f"- Downstream: {d.downstream}")
    if r.sources:
        lines += ["", "## Sources", "", *[f"- {line}" for line in r.sources]]
    if r.deviations:
        lines += ["", "## Deviations from the authors' code", "",
                  *[f"- {line}" for line in r.deviations]]
    if metadata:
        inp, out = metadata.get("input", {}), metadata.get("outputs", {})
        lines += ["", "## This build", "",
                  f"- Parameters: {metadata.get('encoder', {}).get('parameter_count')}",
                  f"- Input: {inp.get('shape')}, min size {inp.get('min_input_size')}, "
                  f"divisible by {inp.get('divisible_by')}",
                  f"- Features: stride {out.get('features', {}).get('stride')}, "
                  f"{out.get('features', {}).get('channels')} channels",
                  f"- Skips: {json.dumps(out.get('skips', {}))}",
                  f"- Proxy metrics: {json.dumps(metadata.get('pretraining', {}).get('final_metrics'))}",  # noqa: E501
                  f"- Versions: {json.dumps(metadata.get('versions', {}))}"]
    lines += [
        "", "## Load it", "",
        "Keras 3 (the original class, with `skips_model()`):", "",
        "```python", "import ssl3d_keras",
        f"encoder = ssl3d_keras.load_encoder(\"{handle}\")", "```", "",
        "Keras 3, fine-tuning the SavedModel (any optimizer, BatchNorm statistics updated):", "",
        "```python", "from ssl3d_keras.export import SavedModelLayer",
        "features = SavedModelLayer(\"EXPORT/savedmodel\")(inputs)", "```", "",
        "tf_keras (Keras 2) with TF Hub, fine-tunable:", "",
        "```python", "import tensorflow_hub as hub",
        "features = hub.KerasLayer(\"EXPORT/savedmodel\", trainable=True)(inputs)",
        "skips = hub.load(\"EXPORT/savedmodel\").skips(x, training=False)", "```", "",
        "Inference in Keras 3 without ssl3d_keras:", "",
        "```python",
        "layer = keras.layers.TFSMLayer(\"EXPORT/savedmodel\", call_endpoint=\"serving_default\")",
        "features = layer(x)[\"features\"]", "```", "",
        "TF Serving: the `serving_default` signature takes `inputs` and returns `features`; "
        "`serving_skips` returns the skip connections. Check with "
        "`saved_model_cli show --dir EXPORT/savedmodel --all`.", "",
    ]
    return "\n".join(lines)
