// The containers of the Container App as deployed now (azd's pattern): a re-provision keeps the image
// `azd deploy` pushed instead of going back to the placeholder. A module of its own, because a template
// cannot read a resource it also deploys.

@description('True when the app exists (azd sets SERVICE_API_RESOURCE_EXISTS)')
param exists bool

@description('Name of the Container App')
param name string

resource existingApp 'Microsoft.App/containerApps@2024-03-01' existing = if (exists) {
  name: name
}

output containers array = exists ? existingApp.properties.template.containers : []
