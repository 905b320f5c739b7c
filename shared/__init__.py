"""The parts the recipes are made of (the recipes in ``recipes/<task>/train.py`` hold the procedure), in layers: a
module imports only from its own layer or the layers below it, the four task packages never import each other, and
nothing imports in a circle (``pyproject.toml``'s import-linter contracts, run by ``tests/test_layers.py``).

Nothing here knows which recipe calls it or changes the caller's argument objects; a recipe imports only ``shared``.
The tree, top layer first (CONTRIBUTING.md shows the same tree)::

    shared/
      deploy/            a trained folder on new inputs, without the training stack
        predictors.py      one predictor per deployable task, reading inputs as the recipe did; ONNX Runtime model
        concepts.py        the assertion and relation predictors (notes with their concepts in)
        ensemble.py        fold models that predict as one: probabilities averaged, thresholds from out-of-fold
        chain.py           raw notes -> concepts -> assertions -> relations (pipeline.py and its service)
        onnx_export.py     ONNX export gated on parity with PyTorch; int8 quantization
        service.py         the HTTP service (FastAPI): bounded requests, nothing of a request logged
      trust/             whether a model can be trusted beyond its headline number
        explain.py         --explain: integrated gradients (Captum) over words and image patches, Grad-CAM
        audit.py           out-of-fold predictions pooled over folds; the cleanlab label audit
        crossval.py        k-fold cross-validation around any recipe: fold command lines, summaries
        tuning.py          hyperparameter search (Optuna) around any recipe: search spaces, trials, nested CV
      text/              task package: text classification
        data.py            a table's text, pair and label columns read, notes encoded into windows
      ner/               task package: named entity recognition
        data.py            any note format as word-level examples, and predictions written back in it
        windows.py         subword alignment, sliding windows, windows merged back into words
        metrics.py         strict and lenient entity scores (seqeval) with bootstrap CIs
        crf.py             the optional CRF layer, constrained Viterbi
      images/            task package: image classification
        readers.py         class folders, MedMNIST .npz, tables of paths, Hub datasets
        pixels.py          DICOM and 16-bit images: modality LUT, windows, the run's pixel mapping
        decode.py          decoding to RGB at the training size, once
        cache.py           decoded images in a disk cache (--image_cache_dir; by default past 256 MB)
        augment.py         augmentation in plain torch
        backbone.py        position embeddings and processors at the training size; CNN stages
      concepts/          task package: assertion status and relations of concepts already found
        i2b2.py            i2b2 .ast and .rel read against the note's concepts, written back
        brat.py            BRAT R lines between a sentence's entities
        markers.py         entity markers around the concepts of a sentence, as special tokens
        data.py            assertion examples: each problem concept in its marked sentence
        relations.py       relation examples: each candidate pair in its marked sentence
        encode.py          the marked classifier and its inputs: one encoding for both concept tasks
      evaluation/        how a run is scored and reported
        metrics.py         scikit-learn metrics, decision thresholds, bootstrap confidence intervals
        calibration.py     calibration errors, temperature scaling folded into the head, reliability plots
        conformal.py       conformal prediction sets (split conformal, per class), their coverage and set sizes
        subgroups.py       --subgroup_columns: metrics per group with CIs (fairlearn), small groups withheld
        forward.py         batched forward passes in the input's order (float32; PyTorch or an ONNX graph)
        reports.py         results files, reports, plots, prediction tables, the model card
      training/          models and how they are trained
        models.py          safe loading (safetensors only, no remote code), heads, a saved folder reloaded
        lora.py            LoRA targets per architecture, the head saved with the adapter
        optim.py           freezing, layer-wise learning-rate decay, optimisers
        imbalance.py       class weights, focal loss, oversampling
        adaptive.py        defaults derived from the training data; the best epoch kept
        trainer.py         the Trainer of one-row-per-example classifiers, imbalance options applied
        tiny_models.py     tiny BERT / ViT / CNNs built from config, for tests and tutorials
      data/              tables and what is read from them, for any task
        tables.py          CSV/TSV/JSON/parquet/Hub tables with the file and row of every record
        labels.py          label cells, class order, label ids, decided labels
        splits.py          stratified, patient-grouped validation / test splits and folds
        overlap.py         held-out examples that are training examples (a train/test leak), counted
        long_text.py       notes longer than a window: overlapping windows in, one score per note out
      formats/           the clinical note formats several tasks read and write
        textfile.py        text files read strictly (UTF-8, BOM, line endings)
        i2b2.py            i2b2 2010 .txt + .con
        brat.py            BRAT standoff .txt + .ann
        conll.py           CoNLL columns
        json_format.py     JSON lines of words and tags
        detect.py          which of them a path holds
        tags.py            IOB2 / BIOES tags of spans, checked and repaired
      tasks.py           the task registry, and the task record every trained folder carries in config.json
      core/              what everything stands on, knowing no task
        errors.py          DataError: <file>:<line>: <problem>, one line and exit status 2
        files.py           files written atomically; JSON with NaN as null
        args.py            dataclass arguments, --config files, logging, the run's start, main_guard
        outputs.py         output folders refused, cleaned or staged
        resume.py          --resume_from_checkpoint, the same sampling order on resume
        distributed.py     torchrun / accelerate launch helpers
        runner.py          a recipe run in-process by name (tests, notebooks, benchmarks)
"""

from shared.core.errors import DataError

__all__ = ["DataError"]
