"""The command line's job, on the engine (featvis.engine): `featvis.pipeline.job.run`.

    job        inputs collected and checked, the memory plan, a Session, the drawing threads; results
               renamed into place at the end
    listing    mode=list: the model's modules, their output shapes, the layer presets
    sketches   what the job keeps for compare: its sketch file, its layers' CKA matrix (layer_similarity)
    output_folder  one job per output folder (a lock file); a read-only or full disk said in one line
"""
