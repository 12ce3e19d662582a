"""The kopf operator reconciling MultiModel resources into one runtime Deployment + Service per model."""
