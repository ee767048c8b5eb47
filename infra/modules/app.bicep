// The container side: a registry for the `cloud` image (azd builds and pushes it), a Container Apps
// environment whose logs go to Log Analytics through a diagnostic setting (no workspace shared key), and
// the Container App `api` running `labkit serve` on port 8000 as the user-assigned identity.
//
// Every setting the cloud app reads is in `env` below (tests/test_infra.py derives the list from
// labkit/config.py and checks it). No key is among them: the services have keys disabled. The one
// secret is the Application Insights connection string, read here from the resource (never an output)
// and passed as a Container Apps secret.

@description('Region')
param location string

@description('Tags of every resource here')
param tags object = {}

@description('Name of the container registry (alphanumeric, globally unique)')
param registryName string

@description('Name of the Container Apps environment')
param environmentName string

@description('Name of the Container App')
param appName string

@description('azd service name (tag azd-service-name: how azd finds the app to deploy to)')
param serviceName string = 'api'

@description('True once azd has deployed the app (keeps its image and turns on the /health and /ready probes)')
param exists bool = false

@description('Resource id of the user-assigned identity the app runs as')
param identityId string

@description('Client id of that identity (AZURE_CLIENT_ID for DefaultAzureCredential)')
param identityClientId string

@description('Principal id of that identity (for AcrPull)')
param identityPrincipalId string

@description('Log Analytics workspace for the environment\'s logs')
param logAnalyticsWorkspaceId string

@description('Application Insights component the app sends spans to')
param appInsightsName string

@description('Minimum replicas: 1 keeps the sign-in tokens (stored in the replica) and costs while idle; 0 scales to zero')
@minValue(0)
@maxValue(1)
param minReplicas int = 1

@description('Maximum replicas: 1, since sign-in tokens live in one replica\'s LABKIT_HOME')
@minValue(1)
@maxValue(1)
param maxReplicas int = 1

@description('Azure OpenAI endpoint')
param openAiEndpoint string

@description('Chat deployment name')
param chatDeploymentName string

@description('Embedding deployment name')
param embeddingDeploymentName string

@description('Embedding dimensions: the same as the index was built with (.env)')
param embeddingDimensions int

@description('Azure AI Search endpoint')
param searchEndpoint string

@description('Cosmos DB endpoint')
param cosmosEndpoint string

@description('Cosmos DB database')
param cosmosDatabaseName string

@description('Content Safety endpoint')
param contentSafetyEndpoint string

var roles = loadJsonContent('../roles.json')
// azd's placeholder until the first `azd deploy`. It listens on port 80, so it would fail the probes on
// 8000 and stall the deployment: the probes come with the real image, i.e. on the first provision after a
// deploy (`exists`, and an image that is not the placeholder).
var placeholderImage = 'mcr.microsoft.com/azuredocs/containerapps-helloworld:latest'
var connectionStringSecret = 'appinsights-connection-string'

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  name: registryName
  location: location
  tags: tags
  sku: {
    name: 'Basic'
  }
  properties: {
    adminUserEnabled: false
    publicNetworkAccess: 'Enabled'
  }
}

resource acrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, identityPrincipalId, roles.acrPull.id)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull.id)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appEnvironment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: environmentName
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'azure-monitor'
    }
  }
}

resource environmentLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'logs-to-log-analytics'
  scope: appEnvironment
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

module fetchImage 'fetch-container-image.bicep' = {
  name: '${serviceName}-container-image'
  params: {
    exists: exists
    name: appName
  }
}

var image = exists ? fetchImage.outputs.containers[0].image : placeholderImage

var probes = [
  {
    type: 'Startup'
    httpGet: {
      path: '/health'
      port: 8000
    }
    initialDelaySeconds: 5
    periodSeconds: 5
    timeoutSeconds: 3
    failureThreshold: 10
  }
  {
    type: 'Liveness'
    httpGet: {
      path: '/health'
      port: 8000
    }
    periodSeconds: 30
    timeoutSeconds: 5
    failureThreshold: 3
  }
  {
    type: 'Readiness'
    httpGet: {
      path: '/ready'
      port: 8000
    }
    periodSeconds: 30
    timeoutSeconds: 10
    failureThreshold: 3
  }
]

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: appName
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  dependsOn: [
    acrPull
  ]
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    managedEnvironmentId: appEnvironment.id
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: 8000
        transport: 'auto'
        allowInsecure: false
      }
      registries: [
        {
          server: registry.properties.loginServer
          identity: identityId
        }
      ]
      secrets: [
        {
          name: connectionStringSecret
          value: appInsights.properties.ConnectionString
        }
      ]
    }
    template: {
      containers: [
        {
          name: serviceName
          image: image
          resources: {
            cpu: json('1.0')
            memory: '2Gi'
          }
          env: [
            {
              name: 'LABKIT_BACKEND'
              value: 'azure'
            }
            {
              name: 'LABKIT_SAFETY_BACKEND'
              value: 'azure'
            }
            {
              name: 'AZURE_OPENAI_ENDPOINT'
              value: openAiEndpoint
            }
            {
              name: 'AZURE_OPENAI_CHAT_DEPLOYMENT'
              value: chatDeploymentName
            }
            {
              name: 'AZURE_OPENAI_EMBEDDING_DEPLOYMENT'
              value: embeddingDeploymentName
            }
            {
              name: 'AZURE_OPENAI_EMBEDDING_DIMENSIONS'
              value: string(embeddingDimensions)
            }
            {
              name: 'AZURE_SEARCH_ENDPOINT'
              value: searchEndpoint
            }
            {
              name: 'AZURE_COSMOS_ENDPOINT'
              value: cosmosEndpoint
            }
            {
              name: 'AZURE_COSMOS_DATABASE'
              value: cosmosDatabaseName
            }
            {
              name: 'AZURE_CONTENT_SAFETY_ENDPOINT'
              value: contentSafetyEndpoint
            }
            {
              name: 'AZURE_CLIENT_ID'
              value: identityClientId
            }
            {
              name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
              secretRef: connectionStringSecret
            }
          ]
          probes: (image == placeholderImage) ? [] : probes
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
      }
    }
  }
}

output appName string = app.name
output uri string = 'https://${app.properties.configuration.ingress.fqdn}'
output registryLoginServer string = registry.properties.loginServer
output registryName string = registry.name
output environmentName string = appEnvironment.name
