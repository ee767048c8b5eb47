// Contoso Chat on Azure, for `azd up` (docs/azure.md). Subscription scope: one resource group with
// Azure OpenAI (chat + embedding deployments), Azure AI Content Safety, Azure AI Search, Cosmos DB for
// NoSQL, Log Analytics + Application Insights, a container registry and a Container App running the
// Dockerfile's `cloud` target. Keyless: every service has local (key) auth disabled; the app signs in
// as a user-assigned managed identity, the learner with `az login`, both through data-plane roles.
// Outputs are endpoints and names only: azd stores them in .azure/<env>/.env and
// scripts/azd/postprovision.sh writes the ones the kit reads to .env.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name: part of every resource name and of the resource group name')
param environmentName string

@minLength(1)
@description('Region of every resource except Azure OpenAI (openAiLocation)')
param location string

@description('Region of Azure OpenAI; empty: the same as location. It needs quota for both deployments')
param openAiLocation string = ''

@description('Object id of the signed-in learner (azd sets AZURE_PRINCIPAL_ID); empty: no learner roles')
param principalId string = ''

@description('User for a person, ServicePrincipal for a CI identity')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

// ---- Azure OpenAI: model, version, deployment type and capacity (quota: docs/azure.md) ----
@description('Chat deployment name (AZURE_OPENAI_CHAT_DEPLOYMENT)')
param chatDeploymentName string = 'gpt-4o-mini'

@description('Chat model')
param chatModelName string = 'gpt-4o-mini'

@description('Chat model version')
param chatModelVersion string = '2024-07-18'

@description('Chat deployment type')
@allowed([
  'GlobalStandard'
  'DataZoneStandard'
  'Standard'
])
param chatDeploymentType string = 'GlobalStandard'

@description('Chat capacity in thousands of tokens per minute (counts against the subscription\'s regional quota)')
@minValue(1)
param chatCapacity int = 30

@description('Embedding deployment name (AZURE_OPENAI_EMBEDDING_DEPLOYMENT)')
param embeddingDeploymentName string = 'text-embedding-3-small'

@description('Embedding model')
param embeddingModelName string = 'text-embedding-3-small'

@description('Embedding model version')
param embeddingModelVersion string = '1'

@description('Embedding deployment type')
@allowed([
  'Standard'
  'GlobalStandard'
])
param embeddingDeploymentType string = 'Standard'

@description('Embedding capacity in thousands of tokens per minute (counts against the subscription\'s regional quota)')
@minValue(1)
param embeddingCapacity int = 30

@description('Embedding dimensions (AZURE_OPENAI_EMBEDDING_DIMENSIONS): the indexes and the app must agree')
@minValue(1)
param embeddingDimensions int = 1536

// ---- the other services ----
@description('Azure AI Search tier: basic is billed per hour, used or not')
@allowed([
  'free'
  'basic'
  'standard'
])
param searchSku string = 'basic'

@description('Content Safety tier: S0 pay per call, F0 free (one per subscription)')
@allowed([
  'S0'
  'F0'
])
param contentSafetySku string = 'S0'

@description('Cosmos DB database (AZURE_COSMOS_DATABASE)')
param cosmosDatabaseName string = 'contoso'

@description('Log Analytics ingestion cap per day in GB (-1: no cap)')
param logDailyQuotaGb int = 1

@description('Container App minimum replicas: 1 (default) bills while idle and keeps sign-in tokens; 0 scales to zero')
@minValue(0)
@maxValue(1)
param apiMinReplicas int = 1

@description('True once azd has deployed the api service (azd sets SERVICE_API_RESOURCE_EXISTS)')
param apiExists bool = false

var tags = {
  'azd-env-name': environmentName
}
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var aoaiLocation = empty(openAiLocation) ? location : openAiLocation

resource rg 'Microsoft.Resources/resourceGroups@2022-09-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-api-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
    dailyQuotaGb: logDailyQuotaGb
  }
}

module openAi 'modules/openai.bicep' = {
  name: 'openai'
  scope: rg
  params: {
    name: 'oai-${resourceToken}'
    location: aoaiLocation
    tags: tags
    chatDeploymentName: chatDeploymentName
    chatModelName: chatModelName
    chatModelVersion: chatModelVersion
    chatDeploymentType: chatDeploymentType
    chatCapacity: chatCapacity
    embeddingDeploymentName: embeddingDeploymentName
    embeddingModelName: embeddingModelName
    embeddingModelVersion: embeddingModelVersion
    embeddingDeploymentType: embeddingDeploymentType
    embeddingCapacity: embeddingCapacity
    appPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

module contentSafety 'modules/contentsafety.bicep' = {
  name: 'contentsafety'
  scope: rg
  params: {
    name: 'cs-${resourceToken}'
    location: location
    tags: tags
    sku: contentSafetySku
    appPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

module search 'modules/search.bicep' = {
  name: 'search'
  scope: rg
  params: {
    name: 'srch-${resourceToken}'
    location: location
    tags: tags
    sku: searchSku
    appPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  scope: rg
  params: {
    name: 'cosmos-${resourceToken}'
    location: location
    tags: tags
    databaseName: cosmosDatabaseName
    appPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
  }
}

module app 'modules/app.bicep' = {
  name: 'app'
  scope: rg
  params: {
    location: location
    tags: tags
    registryName: 'cr${resourceToken}'
    environmentName: 'cae-${resourceToken}'
    appName: 'ca-api-${resourceToken}'
    serviceName: 'api'
    exists: apiExists
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    identityPrincipalId: identity.outputs.principalId
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
    appInsightsName: monitoring.outputs.appInsightsName
    minReplicas: apiMinReplicas
    maxReplicas: 1
    openAiEndpoint: openAi.outputs.endpoint
    chatDeploymentName: openAi.outputs.chatDeploymentName
    embeddingDeploymentName: openAi.outputs.embeddingDeploymentName
    embeddingDimensions: embeddingDimensions
    searchEndpoint: search.outputs.endpoint
    cosmosEndpoint: cosmos.outputs.endpoint
    cosmosDatabaseName: cosmos.outputs.databaseName
    contentSafetyEndpoint: contentSafety.outputs.endpoint
  }
}

// ---- outputs: azd keeps them in .azure/<env>/.env; endpoints and names only, never a key ----
output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_OPENAI_ENDPOINT string = openAi.outputs.endpoint
output AZURE_OPENAI_CHAT_DEPLOYMENT string = openAi.outputs.chatDeploymentName
output AZURE_OPENAI_EMBEDDING_DEPLOYMENT string = openAi.outputs.embeddingDeploymentName
output AZURE_OPENAI_EMBEDDING_DIMENSIONS int = embeddingDimensions
output AZURE_SEARCH_ENDPOINT string = search.outputs.endpoint
output AZURE_COSMOS_ENDPOINT string = cosmos.outputs.endpoint
output AZURE_COSMOS_DATABASE string = cosmos.outputs.databaseName
output AZURE_CONTENT_SAFETY_ENDPOINT string = contentSafety.outputs.endpoint
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = app.outputs.registryLoginServer
output AZURE_CONTAINER_REGISTRY_NAME string = app.outputs.registryName
output AZURE_CONTAINER_APPS_ENVIRONMENT_NAME string = app.outputs.environmentName
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName
output SERVICE_API_NAME string = app.outputs.appName
output SERVICE_API_URI string = app.outputs.uri
