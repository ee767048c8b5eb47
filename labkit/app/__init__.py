"""The Contoso Chat HTTP service (`labkit serve`): sign-in, limits, streaming, feedback.

Introduced in notebooks/07_deploy.ipynb. `create_app()` builds the FastAPI app; `labkit serve`
starts the local services it needs, then uvicorn.
"""
