"""Demo studies, built for the CLI's ``demo`` verb and the app's Home page; not part of the measure.

``build`` computes every view of a built world (``concept_world``: drawn images seen by real networks;
``synthetic``: planted features); ``photos`` builds studies of real photo folders; ``study_files``
writes a study folder from arrays; ``datasets`` fetches public archives.
"""
