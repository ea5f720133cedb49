"""One job, stage after stage: `featvis.pipeline.job.run`.

    job        inputs checked, model loaded, layers selected; results renamed into place at the end
    inference  image -> prediction and recorded maps (or a kept forward of the sweep)
    forward_errors  a forward pass that fails on an image (too small for the model) said in one line
    drawer     draws and logs each image in a worker thread while the model runs the next
    sketches   what the job keeps for compare: its sketch file, its layers' CKA matrix (layer_similarity)
    result     what the job did, for the CLI and the sweep summary
    output_folder  one job per output folder (a lock file); a read-only or full disk said in one line
"""
