"""The model artefact in one place: everything that reads, writes, checks or scores the exported PMML.

Why one package: the decision job ships `flink_pipeline` and `experiment` only, so the code that must run wherever a
model is loaded lives here and imports neither `training`, PyFlink nor Kafka. Training keeps only what needs the
native pipeline (fitting, nyoka's export, the native-versus-PMML parity gate) and imports the rest from here.

Modules, in the order a PMML meets them:

- `pmml_guard`: the pre-parse gate every PMML file passes (no DTD, entities, oversize, deep nesting).
- `digest`: the one streamed sha256 of a file (a PMML's `model_version`, a jar's checksum).
- `card`: model.json, the model card, and the launch gate `load_verified_model_card`.
- `pmml_xml`: the one hardened XML parser and serialiser, and the PMML namespace.
- `pmml_fix`: the corrections that make nyoka's export score like XGBoost.
- `ir`: the compiler's intermediate representation and the one walk over its trees.
- `parse`: PMML bytes → `ir.ModelSpec`, refusing every shape the evaluators do not implement.
- `batch`: the numpy batch evaluator over flattened tree arrays.
- `codegen`: the generated per-record evaluator.
- `compiled`: `CompiledModel` / `compile_pmml`, both evaluators behind one object.
- `reference`: pypmml, the reference engine.
- `verify`: compiled against pypmml on given rows plus split-point probe rows.
- `rows`: a small CSV reader for the reference rows (the model's test set).
- `scorer`: `build_verified_scorer`: gate, hash, compile, verify, or refuse / fall back.

This file imports nothing, so importing one light module (the gate, the card, the digest) stays light.
"""
